"""Adapters to the systems the federation does not own: social security, housing, transport, members' systems."""

from __future__ import annotations

from typing import Any


def register(registry: Any) -> None:
    """Mount the connector routes, sync jobs, commands and sandboxes (each connector adds its own lines here)."""
    from connectors.framework import api, models
    from connectors.framework.cli import connectors, sandbox

    _ = models  # the table joins the schema's metadata
    registry.add_routes(api.routes)
    registry.add_command(connectors)
    registry.add_command(sandbox)
