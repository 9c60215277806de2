"""``twincity circulation``: the periodic work of circulation, run by hand or by cron where no worker runs."""

from __future__ import annotations

import json
from typing import Any

import click


def _services() -> Any:
    from library.catalog.cli import _services as catalog_services

    return catalog_services()


@click.group()
def circulation() -> None:
    """Circulation across member libraries."""


@circulation.command()
def notices() -> None:
    """Raise today's due-soon, overdue and transit-overdue notices (once a day each) and deliver them."""
    from federation.jobs import outbox
    from library.circulation import notices as notices_module

    async def go() -> dict[str, int]:
        svc = _services()
        try:
            counts = await notices_module.scan(svc)
            while await outbox.relay(svc):
                pass
            return counts
        finally:
            await svc.close()

    from library.catalog.cli import _run

    click.echo(json.dumps(_run(go())))


@circulation.command("expire-holds")
def expire_holds() -> None:
    """Return copies whose hold-shelf time ran out to circulation (or to the next request)."""
    from library.catalog.cli import _run
    from library.circulation import requests

    async def go() -> int:
        svc = _services()
        try:
            return await requests.expire_holds(svc)
        finally:
            await svc.close()

    click.echo(json.dumps({"expired": _run(go())}))
