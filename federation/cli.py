"""The ``twincity`` command."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import click

from federation.settings import load_settings


def _settings() -> Any:
    from federation import logs

    settings = load_settings()
    logs.setup(settings.log_level, json_lines=settings.log_json)
    return settings


def _services(settings: Any) -> Any:
    from federation.extensions import build_services

    return build_services(settings)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """twincity: the Chengdu–Chongqing federation service."""


@main.command()
@click.option("--host", default=None, help="address to listen on (default from TWINCITY_HOST, 127.0.0.1)")
@click.option("--port", default=None, type=int, help="port (default from TWINCITY_PORT, 8080)")
def run(host: str | None, port: int | None) -> None:
    """Serve the API, the portal and (without a broker) the background jobs."""
    from aiohttp import web

    from federation.app import create_app

    settings = _settings()
    app = create_app(settings)
    web.run_app(
        app,
        host=host or settings.host,
        port=port or settings.port,
        shutdown_timeout=30,
        access_log=None,
        print=lambda s: click.echo(s, err=True),
    )


@main.command()
@click.option("--concurrency", default=2, show_default=True, type=int)
def worker(concurrency: int) -> None:
    """Run a Celery worker (needs TWINCITY_BROKER_URL); it also runs the periodic outbox relay."""
    from federation.jobs.celery_app import make_celery

    settings = _settings()
    try:
        app = make_celery(settings)
    except ValueError as e:
        raise click.ClickException(str(e)) from None
    app.worker_main(
        [
            "worker",
            "--beat",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            "--pool=prefork" if concurrency > 1 else "--pool=solo",
        ]
    )


@main.group()
def db() -> None:
    """The database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply the migrations up to REVISION."""
    from federation.extensions import load
    from federation.migrate import upgrade

    settings = _settings()
    load(settings)
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.effective_database_url, revision)
    click.echo(f"database at {revision}")


@main.group()
def demo() -> None:
    """The demo world."""


@demo.command("load")
def demo_load() -> None:
    """Load the demo members, accounts and residents (idempotent)."""
    from federation import demo as demo_world

    settings = _settings()

    async def go() -> dict[str, int]:
        svc = _services(settings)
        try:
            return await demo_world.load(svc)
        finally:
            await svc.close()

    counts = asyncio.run(go())
    click.echo("demo world loaded: " + ", ".join(f"{v} new {k}" for k, v in counts.items()))


@main.group()
def audit() -> None:
    """The audit trail."""


@audit.command("verify")
def audit_verify() -> None:
    """Check the hash chain; names the first edited, removed or inserted entry. Exit code 1 when broken."""
    from federation.audit.service import verify

    settings = _settings()

    async def go() -> Any:
        svc = _services(settings)
        try:
            async with svc.db.reader() as s:
                return await verify(s, svc.audit_key)
        finally:
            await svc.close()

    result = asyncio.run(go())
    if result.ok:
        click.echo(f"audit trail intact: {result.checked} entries verified")
        return
    click.echo(
        f"audit trail BROKEN at entry {result.first_broken_seq}: {result.reason} "
        f"({result.checked} entries verified before it)",
        err=True,
    )
    sys.exit(1)


@main.group()
def identity() -> None:
    """The identity layer."""


@identity.command("check")
@click.argument("number")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
def identity_check(number: str, as_json: bool) -> None:
    """Validate a national ID number (GB 11643). Exit code 1 when invalid."""
    from federation.identity.idnumber import InvalidIdNumber, mask_id_number, parse_id_number

    try:
        n = parse_id_number(number)
    except InvalidIdNumber as e:
        if as_json:
            click.echo(json.dumps({"valid": False, "code": e.code, "reason": e.reason}, ensure_ascii=False))
        else:
            click.echo(f"invalid: {e.reason}")
        sys.exit(1)
    info = {
        "valid": True,
        "number": mask_id_number(n.value),
        "birth_date": n.birth_date.isoformat(),
        "sex": n.sex,
        "province": n.province,
        "place": n.place,
        "upgraded_from_15": n.upgraded_from_15,
        "warnings": list(n.warnings),
    }
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False))
        return
    where = " ".join(x for x in (n.province, n.place) if x) or "unknown region"
    extra = " (upgraded from the 15-digit format)" if n.upgraded_from_15 else ""
    click.echo(f"valid: {mask_id_number(n.value)}, born {n.birth_date.isoformat()}, {n.sex}, issued in {where}{extra}")
    for w in n.warnings:
        click.echo(f"warning: {w}")


@main.group()
def apikey() -> None:
    """API keys for member systems."""


@apikey.command("create")
@click.option("--member", required=True, help="the member system's code")
@click.option("--scope", "scopes", multiple=True, help="an operation the key may call (repeat)")
@click.option("--name", default="", help="a label for the key")
def apikey_create(member: str, scopes: tuple[str, ...], name: str) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    from federation.accounts import service as accounts
    from federation.members import service as members

    settings = _settings()

    async def go() -> str:
        svc = _services(settings)
        try:
            async with svc.db.uow() as uow:
                await members.get(uow.session, member)
                _, secret = await accounts.create_api_key(
                    uow, svc, member, scopes or ["identity.read"], name=name, actor="cli"
                )
                await uow.commit()
                return secret
        finally:
            await svc.close()

    from federation.errors import DomainError

    try:
        secret = asyncio.run(go())
    except DomainError as e:
        raise click.ClickException(e.detail) from None
    click.echo(secret)
    click.echo("store it now: it is not shown again", err=True)


if __name__ == "__main__":
    main()
