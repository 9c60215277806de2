"""Adapters to the systems the federation does not own: social security, housing, transport, members' systems."""

from __future__ import annotations

from typing import Any


def register(registry: Any) -> None:
    """Mount the connector routes and sync jobs (each connector adds its own here)."""
