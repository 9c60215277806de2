"""``twincity connectors list|status|sync NAME|configure NAME`` and ``twincity sandbox SYSTEM --port N``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click


def _services() -> Any:
    from pydantic import ValidationError

    from federation import logs
    from federation.extensions import build_services
    from federation.settings import MissingSecrets, load_settings

    try:
        settings = load_settings()
    except (MissingSecrets, ValidationError, FileNotFoundError) as e:
        raise click.ClickException(f"configuration: {e}") from None
    logs.setup("WARNING", json_lines=settings.log_json)
    return build_services(settings)


def _run(work: Any) -> Any:
    """Run ``work(svc)``; a refusal or a partner's failure is one line (exit 1), not a traceback."""
    from sqlalchemy.exc import DBAPIError

    from federation.errors import DomainError

    async def go() -> Any:
        svc = _services()
        try:
            return await work(svc)
        finally:
            await svc.close()

    try:
        return asyncio.run(go())
    except DomainError as e:
        raise click.ClickException(f"{e.code}: {e.detail}") from None
    except DBAPIError as e:
        first = str(e.orig).strip().splitlines()[0] if e.orig is not None else type(e).__name__
        hint = "; has `twincity db upgrade` been run?" if "no such table" in first or "does not exist" in first else ""
        raise click.ClickException(f"database error: {first}{hint}") from None


@click.group()
def connectors() -> None:
    """Connectors to outside systems."""


@connectors.command("list")
def list_cmd() -> None:
    """One line per connector: name, kind, member, circuit state, watermark."""
    from connectors.framework import service

    async def work(svc: Any) -> list[Any]:
        async with svc.db.reader() as s:
            return await service.listing(s)

    for row in _run(work):
        enabled = "" if (row.config or {}).get("enabled", True) else " (disabled)"
        click.echo(
            f"{row.name}\t{row.kind}\t{row.member_code}\t{row.circuit_state}\twatermark={row.watermark or '-'}{enabled}"
        )


@connectors.command()
def status() -> None:
    """Every connector's health as JSON (what GET /api/v1/connectors answers)."""
    from connectors.framework import service
    from connectors.framework.api import health_of

    async def work(svc: Any) -> list[dict[str, Any]]:
        async with svc.db.reader() as s:
            return [health_of(r).model_dump(mode="json") for r in await service.listing(s)]

    click.echo(json.dumps(_run(work), ensure_ascii=False, indent=2))


@connectors.command()
@click.argument("name")
def sync(name: str) -> None:
    """Run one connector's sync now, in this process, and print its counts."""
    from connectors.framework.sync import run_sync

    async def work(svc: Any) -> dict[str, Any]:
        return await run_sync(svc, name, actor="cli:connectors")

    click.echo(json.dumps(_run(work), ensure_ascii=False))


@connectors.command()
@click.argument("name")
@click.option("--kind", required=True, help="social_security, housing, transport, ...")
@click.option("--member", required=True, help="the member system's code")
@click.option("--base-url", required=True)
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="a configuration field (JSON value)")
@click.option("--secret", "secrets", multiple=True, metavar="KEY=VALUE", help="a credential, stored encrypted")
def configure(
    name: str, kind: str, member: str, base_url: str, settings: tuple[str, ...], secrets: tuple[str, ...]
) -> None:
    """Create or change a connector (secrets are kept when none is given)."""
    from connectors.framework import service

    config: dict[str, Any] = {"base_url": base_url}
    for item in settings:
        key, _, value = item.partition("=")
        try:
            config[key] = json.loads(value)
        except json.JSONDecodeError:
            config[key] = value
    secret_values = dict(s.partition("=")[::2] for s in secrets) if secrets else None

    async def work(svc: Any) -> None:
        async with svc.db.uow() as uow:
            await service.configure(
                uow, svc, name, kind=kind, member_code=member, config=config, secrets=secret_values, actor="cli"
            )
            await uow.commit()

    _run(work)
    click.echo(f"connector {name} configured")


@click.command()
@click.argument("system")
@click.option("--port", type=int, default=8700, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def sandbox(system: str, port: int, host: str) -> None:
    """Run an outside system's sandbox server (its API as connectors/<kind>/README.md documents it); ``all`` runs
    every sandbox on the port the demo world's connectors call."""
    from connectors.framework.sandbox import DEMO_PORTS, SANDBOXES, run, run_all

    if system == "all":
        for name, demo_port in sorted(DEMO_PORTS.items()):
            click.echo(f"sandbox {name} on http://{host}:{demo_port}")
        run_all(host=host)
        return
    if system not in SANDBOXES:
        raise click.ClickException(f"no sandbox {system}; known: all, {', '.join(sorted(SANDBOXES)) or 'none'}")
    click.echo(f"sandbox {system} on http://{host}:{port} (faults: POST /_sandbox/faults)")
    run(system, host=host, port=port)
