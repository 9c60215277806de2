"""The registration hook through which library, health and connectors plug into the core.

Each extension is an entry point in the ``twincity.extensions`` group naming a
``register(registry)`` function. The core imports none of them by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from typing import Any

from federation.services import Services
from federation.settings import Settings
from federation.web.routing import Routes

ServicesHook = Callable[[Services], None]
DemoLoader = Callable[[Services], Awaitable[dict[str, int]]]


@dataclasses.dataclass
class Registry:
    routes: list[Routes] = dataclasses.field(default_factory=list)
    service_hooks: list[ServicesHook] = dataclasses.field(default_factory=list)
    names: list[str] = dataclasses.field(default_factory=list)
    commands: list[Any] = dataclasses.field(default_factory=list)
    scopes: dict[str, str] = dataclasses.field(default_factory=dict)
    demo_loaders: list[DemoLoader] = dataclasses.field(default_factory=list)

    def add_routes(self, routes: Routes) -> None:
        self.routes.append(routes)

    def add_command(self, command: Any) -> None:
        """A click command or group added to the ``twincity`` command line."""
        self.commands.append(command)

    def add_scope(self, name: str, description: str) -> None:
        """An operation API keys can be scoped to."""
        self.scopes[name] = description

    def on_services(self, hook: ServicesHook) -> None:
        """Called with the process's services: register job kinds, event handlers, clients."""
        self.service_hooks.append(hook)

    def on_demo(self, loader: DemoLoader) -> None:
        """Called by ``twincity demo load`` after the core's demo world is in: load the extension's demo data
        (idempotently) and return counts of what was new, e.g. ``{"catalogue records": 6000}``."""
        self.demo_loaders.append(loader)


def load(settings: Settings) -> Registry:
    registry = Registry()
    wanted = set(settings.extensions) if settings.extensions is not None else None
    for ep in sorted(entry_points(group="twincity.extensions"), key=lambda e: e.name):
        if wanted is not None and ep.name not in wanted:
            continue
        ep.load()(registry)
        registry.names.append(ep.name)
    from federation.accounts.service import SCOPES

    SCOPES.update(registry.scopes)
    return registry


def build_services(settings: Settings, registry: Registry | None = None) -> Services:
    """Services of one process, with every extension's jobs and event handlers registered."""
    from federation import bootstrap
    from federation.accounts.service import configure_passwords

    registry = registry or load(settings)
    configure_passwords(settings.password_time_cost, settings.password_memory_kib)
    svc = Services.build(settings)
    bootstrap.register_core(svc)
    for hook in registry.service_hooks:
        hook(svc)
    return svc
