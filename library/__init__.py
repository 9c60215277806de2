"""Libraries acting as one: the union catalogue and circulation across member libraries."""

from __future__ import annotations

from typing import Any


def register(registry: Any) -> None:
    """Mount the library routes and jobs (the catalogue and circulation add theirs here)."""
