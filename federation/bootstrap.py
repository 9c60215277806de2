"""What the core itself registers on a process's services (its job kinds and event handlers)."""

from __future__ import annotations

from federation.services import Services


def register_core(svc: Services) -> None:
    from federation.jobs import builtin

    builtin.register(svc)
