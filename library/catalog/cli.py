"""``twincity catalog``: load MARC files, search, rebuild the index."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
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


def _run(coro: Any) -> Any:
    """Run the command's work; a domain refusal, or a database that is missing, unreachable or not migrated,
    is a one-line error (exit 1), not a traceback."""
    from sqlalchemy.exc import DBAPIError

    from federation.errors import DomainError
    from search.engine import IndexReadOnly

    try:
        return asyncio.run(coro)
    except DomainError as e:
        raise click.ClickException(e.detail) from None
    except IndexReadOnly:
        raise click.ClickException(
            "the search index is being written by a running server: stop it for this command, or load files "
            "through the server (POST /api/v1/catalog/imports)"
        ) from None
    except DBAPIError as e:
        first = str(e.orig).strip().splitlines()[0] if e.orig is not None else type(e).__name__
        hint = "; has `twincity db upgrade` been run?" if "no such table" in first or "does not exist" in first else ""
        raise click.ClickException(f"database error: {first}{hint}") from None
    except ConnectionError as e:
        raise click.ClickException(f"cannot reach the database: {e}") from None
    except OSError as e:  # a file that went away, a full disk, an index directory we may not write
        raise click.ClickException(str(e)) from None


@click.group()
def catalog() -> None:
    """The union catalogue."""


@catalog.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--library", required=True, help="the member library's code, e.g. CQL")
@click.option(
    "--format",
    "fmt",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "marc21", "marcxml", "marcjson", "unimarc"]),
)
@click.option(
    "--encoding",
    default="auto",
    show_default=True,
    type=click.Choice(["auto", "utf-8", "marc-8", "gbk", "gb18030", "gb2312", "iso-8859-1"]),
)
@click.option("--holdings", default=None, help="holdings layout preset (e.g. marc21-852, cnmarc-905)")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="write the full report as JSON")
def ingest(
    files: tuple[Path, ...], library: str, fmt: str, encoding: str, holdings: str | None, report: Path | None
) -> None:
    """Load MARC files into the catalogue, with progress and a closing summary."""
    from library.catalog.holdings import PRESETS
    from library.catalog.tasks import IngestReport, ingest_file

    if holdings and holdings not in PRESETS:
        raise click.BadParameter(f"known layouts: {', '.join(sorted(PRESETS))}", param_hint="--holdings")

    async def go() -> list[tuple[Path, IngestReport]]:
        svc = _services()
        out = []
        try:
            from federation.members import service as members

            async with svc.db.reader() as s:
                await members.get(s, library)
            for path in files:
                size = path.stat().st_size
                with click.progressbar(
                    length=max(size, 1),
                    label=path.name,
                    file=sys.stderr,
                    show_pos=False,
                    show_percent=False,
                    show_eta=False,
                ) as bar:

                    async def progress(rep: IngestReport, bar: Any = bar, name: str = path.name) -> None:
                        rate = rep.seen / rep.seconds if rep.seconds else 0
                        bar.label = f"{name}: {rep.seen:,} records, {rate:,.0f}/s"
                        bar.render_progress()

                    rep = await ingest_file(
                        svc,
                        path,
                        library=library,
                        fmt=fmt,
                        encoding=encoding,
                        holdings=holdings,
                        actor="cli",
                        progress=progress,
                    )
                    bar.update(size)
                out.append((path, rep))
        finally:
            await svc.close()
        return out

    results = _run(go())
    for path, rep in results:
        d = rep.as_dict()
        click.echo(
            f"{path}: {d['added']} added, {d['updated']} updated, {d['unchanged']} unchanged, "
            f"{d['rejected']} rejected, {d['records_per_second']:,.0f} records/s"
        )
        for r in rep.rejections[:20]:
            click.echo(f"  rejected record #{r['position']} at byte {r['offset']}: {r['reason']}")
        if rep.rejected > 20:
            click.echo(f"  ... and {rep.rejected - 20} more (see --report)")
    if report:
        report.write_text(json.dumps({str(p): r.as_dict() for p, r in results}, ensure_ascii=False, indent=2))


@catalog.command()
@click.argument("query")
@click.option("--library", "libraries", multiple=True, help="only works held by this library (repeat)")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 100))
@click.option("--json", "as_json", is_flag=True, help="print the API's result objects")
def search(query: str, libraries: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Search the union catalogue."""
    from library.catalog import service

    async def go() -> Any:
        svc = _services()
        try:
            return await service.search(svc, service.SearchRequest(q=query, libraries=libraries, limit=limit))
        finally:
            await svc.close()

    result = _run(go())
    hits = [service.hit_view(h) for h in result.hits]
    if as_json:
        click.echo(json.dumps({"total": result.total, "items": hits}, ensure_ascii=False))
        return
    click.echo(f"{result.total} works")
    for h in hits:
        who = ", ".join(h["authors"][:2])
        click.echo(f"{h['title']} / {who} ({h['year'] or 'n.d.'})  [{' '.join(h['libraries'])}]  {h['id']}")


@catalog.command()
def reindex() -> None:
    """Rebuild the search index from the database (searches keep answering until the swap)."""
    from library.catalog.tasks import rebuild_index

    async def go() -> int:
        svc = _services()
        try:
            return await rebuild_index(svc)
        finally:
            await svc.close()

    click.echo(f"{_run(go())} works indexed")
