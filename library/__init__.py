"""Libraries acting as one: the union catalogue and circulation across member libraries."""

from __future__ import annotations

from typing import Any


def register(registry: Any) -> None:
    """Mount the catalogue's and circulation's routes, jobs, event handlers, scopes and commands."""
    from library.catalog import api, demo, models, oai, sru, tasks
    from library.catalog.cli import catalog

    _ = models  # the tables join the schema's metadata
    registry.add_routes(api.routes)
    registry.add_routes(oai.routes)
    registry.add_routes(sru.routes)
    registry.on_services(tasks.register)
    registry.add_command(catalog)
    registry.add_scope("catalog.write", "load a member library's MARC records")
    registry.on_demo(demo.load)

    from library.circulation import api as circulation_api
    from library.circulation import models as circulation_models
    from library.circulation import requests as circulation_requests

    _ = circulation_models
    registry.add_routes(circulation_api.routes)
    registry.on_services(circulation_requests.register)
    from library.circulation import demo as circulation_demo
    from library.circulation import reports_api

    registry.add_routes(reports_api.routes)
    from library.circulation import admin_api as circulation_admin_api
    from library.circulation import notices as circulation_notices
    from library.circulation.cli import circulation as circulation_cli

    registry.add_routes(circulation_admin_api.routes)
    registry.on_services(circulation_notices.register)
    registry.add_command(circulation_cli)
    registry.on_demo(circulation_demo.load)  # after the catalogue's loader: it lends the demo catalogue's copies
