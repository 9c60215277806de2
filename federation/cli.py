"""The ``twincity`` command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

from federation.settings import Settings, load_settings


@contextlib.contextmanager
def _configuration(*also: type[Exception]) -> Iterator[None]:
    """A configuration mistake (the settings', or an extension's own, such as a key production must be given) is
    told in a sentence, never with a secret's value, not a traceback."""
    from federation.settings import ConfigurationError

    try:
        yield
    except (ConfigurationError, *also) as e:
        raise click.ClickException(f"configuration: {e}") from None


def _settings() -> Any:
    from pydantic import ValidationError

    from federation import logs

    with _configuration(ValidationError, FileNotFoundError):
        settings = load_settings()
    logs.setup(settings.log_level, json_lines=settings.log_json)
    return settings


def _services(settings: Any) -> Any:
    from federation.extensions import build_services

    with _configuration():
        return build_services(settings)


def _run(coro: Any) -> Any:
    """Run a command's database work; a database that is missing, unreachable or not migrated is a one-line
    error (exit 1), not a traceback."""
    from sqlalchemy.exc import DBAPIError

    from federation.identity.idnumber import mask_id_numbers_in_text

    try:
        return asyncio.run(coro)
    except DBAPIError as e:
        first = str(e.orig).strip().splitlines()[0] if e.orig is not None else type(e).__name__
        hint = ""
        if "no such table" in first or "does not exist" in first:
            hint = "; has `twincity db upgrade` been run?"
        raise click.ClickException(f"database error: {mask_id_numbers_in_text(first)}{hint}") from None
    except OSError as e:
        raise click.ClickException(f"cannot reach the database: {e}") from None


class _Main(click.Group):
    """The core's commands plus those the installed extensions add (``twincity catalog ...``)."""

    def _extension_commands(self) -> dict[str, click.Command]:
        if not hasattr(self, "_ext"):
            from federation.extensions import load

            # which extensions are enabled is all it needs: no secrets (so --help works before they exist)
            self._ext = {c.name: c for c in load(Settings()).commands}
        return self._ext

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._extension_commands()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        return super().get_command(ctx, name) or self._extension_commands().get(name)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """twincity: the Chengdu–Chongqing federation service."""


@main.command()
@click.option("--host", default=None, help="address to listen on (default from TWINCITY_HOST, 127.0.0.1)")
@click.option("--port", default=None, type=int, help="port (default from TWINCITY_PORT, 8080)")
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="server processes sharing the port (PostgreSQL; SQLite has one writer, so one process serves it best)",
)
def run(host: str | None, port: int | None, workers: int) -> None:
    """Serve the API, the portal and (without a broker) the background jobs."""
    settings = _settings()
    host, port = host or settings.host, port or settings.port
    if workers == 1:
        _serve(host, port, background=True, reuse_port=False, settings=settings)
        return
    _serve_workers(host, port, workers)


def _serve(host: str, port: int, *, background: bool, reuse_port: bool, settings: Any = None) -> None:
    from aiohttp import web

    from federation.app import SERVER_LIMITS, create_app

    settings = settings or _settings()
    with _configuration():
        app = create_app(settings, run_background=background)
    app.on_startup.append(_freeze_startup_heap)
    web.run_app(
        app,
        **SERVER_LIMITS,  # run_app passes these to the request handler (a `handler_args=` keyword is dropped)
        host=host,
        port=port,
        reuse_port=reuse_port,
        shutdown_timeout=30,
        access_log=None,
        print=lambda s: click.echo(s, err=True),
    )


async def _freeze_startup_heap(_app: Any) -> None:
    from federation.bootstrap import freeze_startup_heap

    freeze_startup_heap()


def _worker_main(host: str, port: int, index: int) -> None:
    """One of ``--workers`` processes: its own app, engine and pool. Only the first runs the in-process jobs and
    outbox relay (the others' events wait for its poll, at most ``InProcessRunner.poll_s``); with a broker, the
    Celery workers do, for every process alike."""
    try:
        _serve(host, port, background=index == 0, reuse_port=True)
    except KeyboardInterrupt:  # stopped while still starting (importing, connecting): nothing to shut down yet
        return
    except click.ClickException as e:  # outside click's own handling here: told the same way, in a sentence
        e.show()
        sys.exit(e.exit_code)


def _serve_workers(host: str, port: int, workers: int) -> None:
    """Start ``workers`` server processes on one port (``SO_REUSEPORT``: the kernel spreads the connections) and
    stop them together: SIGINT or SIGTERM here is passed on, and one exiting stops the others."""
    import multiprocessing
    import signal

    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter each: no loop, engine or pool shared by fork
    procs = [ctx.Process(target=_worker_main, args=(host, port, i), name=f"twincity-{i}") for i in range(workers)]
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for p in procs:
            if p.pid is not None and p.is_alive():
                os.kill(p.pid, signal.SIGINT)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in procs:
            p.start()
        click.echo(f"twincity: {workers} server processes on http://{host}:{port}", err=True)
        while not stopping and all(p.is_alive() for p in procs):
            procs[0].join(timeout=0.5)
        stopped_by_signal = stopping  # asked to stop, a worker interrupted while starting is no failure
        if not stopping:  # one died: the others go too (a supervisor restarts the whole service)
            stop(signal.SIGTERM, None)
        for p in procs:
            p.join(timeout=40)
            if p.is_alive():
                p.kill()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    codes = [p.exitcode for p in procs]
    if not stopped_by_signal and any(c not in (0, None, -signal.SIGINT) for c in codes):
        raise click.ClickException(f"server processes exited with {codes}")


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
    """Load the demo members, accounts and residents, and each extension's demo data (idempotent)."""
    from federation import demo as demo_world
    from federation.extensions import build_services, load

    settings = _settings()

    async def go() -> dict[str, int]:
        registry = load(settings)
        svc = build_services(settings, registry)
        try:
            return await demo_world.load(svc, registry.demo_loaders)
        finally:
            await svc.close()

    counts = _run(go())
    click.echo("demo world loaded: " + ", ".join(f"{v} new {k}" for k, v in counts.items()))


@main.group()
def audit() -> None:
    """The audit trail."""


@audit.command("verify")
@click.option("--heads", is_flag=True, help="print each chain's last entry (keep them elsewhere to detect a cut tail)")
def audit_verify(heads: bool) -> None:
    """Check the hash chains; names the first edited, removed or inserted entry. Exit code 1 when broken."""
    from federation.audit.service import verify

    settings = _settings()

    async def go() -> Any:
        svc = _services(settings)
        try:
            async with svc.db.reader() as s:
                return await verify(s, svc.audit_key)
        finally:
            await svc.close()

    result = _run(go())
    if result.ok:
        chains = len(result.heads)
        click.echo(f"audit trail intact: {result.checked} entries verified in {chains} chain{'s' * (chains != 1)}")
        for head in result.heads if heads else ():
            click.echo(f"chain {head.chain}: {head.link} entries, last hash {head.hash}")
        return
    click.echo(
        f"audit trail BROKEN at entry {result.first_broken_seq}: {result.reason} "
        f"({result.checked} entries verified before it)",
        err=True,
    )
    sys.exit(1)


@main.group("secrets")
def secrets_group() -> None:
    """The secrets: changing the data key (see docs/operations.md)."""


@secrets_group.command("reencrypt")
@click.option("--check", is_flag=True, help="only count the values not yet under the current data key")
def secrets_reencrypt(check: bool) -> None:
    """Rewrite every encrypted value under the current data key (TWINCITY_DATA_KEY); the keys it replaced must be
    given in TWINCITY_RETIRED_DATA_KEYS meanwhile. Safe to run again. Exit code 1 when a value could not be read
    (or, with --check, when any value is not under the current key yet)."""
    from federation.identity import rekey

    settings = _settings()

    async def go() -> Any:
        svc = _services(settings)
        try:
            return await rekey.reencrypt(svc, check=check)
        finally:
            await svc.close()

    reports = _run(go())
    left = 0
    for r in reports:
        done = "to rewrite" if check else "rewritten"
        line = f"{r.name}: {r.rewritten} {done}, {r.current} under the current key already"
        if r.unreadable:
            line += f", {r.unreadable} readable by no given key (rows {', '.join(r.unreadable_keys)})"
        click.echo(line)
        left += r.unreadable + (r.rewritten if check else 0)
    if left:
        sys.exit(1)
    if not check:
        click.echo("every value is under the current data key: the retired keys can be removed")


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
        secret = _run(go())
    except DomainError as e:
        raise click.ClickException(e.detail) from None
    click.echo(secret)
    click.echo("store it now: it is not shown again", err=True)


if __name__ == "__main__":
    main()
