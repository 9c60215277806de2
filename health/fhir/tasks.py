"""The FHIR import job: a spooled Bundle too big to store while the hospital waits, or an NDJSON load.

A Bundle is stored as ``POST /fhir`` would (a transaction all or nothing). NDJSON is stored in chunks of
``CHUNK_LINES`` lines, each its own transaction with batch semantics: a bad line is reported (line number,
expression, message) and the others are stored; a reference resolves within its chunk or to what is stored
already, so a load lists patients before their results. The spooled file is deleted when the job ends, whatever
the outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from federation.jobs.service import JobContext
from federation.services import Services
from health.fhir.ingest import IngestRefused, IngestResult, bundle_items, ingest_items, loads, ndjson_items

IMPORT = "health.fhir_import"
CHUNK_LINES = 1000
MAX_REPORTED = 1000  # line errors listed in the result (all are counted)


class _Report:
    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}
        self.errors: list[dict[str, Any]] = []
        self.refused = 0
        self.person_ids: set[str] = set()

    def add(self, result: IngestResult, *, by_line: bool) -> None:
        for rtype, per in result.counts().items():
            into = self.counts.setdefault(rtype, {})
            for outcome, n in per.items():
                into[outcome] = into.get(outcome, 0) + n
        self.person_ids.update(result.person_ids)
        for item in result.items:
            if not item.ok:
                self.refused += 1
                for x in item.issues:
                    self.error(item.index if by_line else None, x, entry=None if by_line else item.index)

    def error(self, line: int | None, x: dict[str, Any], entry: int | None = None) -> None:
        if len(self.errors) >= MAX_REPORTED:
            return
        out: dict[str, Any] = {"expression": (x.get("expression") or [""])[0], "message": x.get("diagnostics", "")}
        if line is not None:
            out["line"] = line
        if entry is not None:
            out["entry"] = entry
        self.errors.append(out)

    def as_dict(self, **extra: Any) -> dict[str, Any]:
        return {
            **extra,
            "counts": self.counts,
            "refused": self.refused,
            "errors": self.errors,
            "persons": len(self.person_ids),
        }


def _lines(path: Path) -> Iterator[list[tuple[int, bytes]]]:
    chunk: list[tuple[int, bytes]] = []
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            chunk.append((number, line))
            if len(chunk) >= CHUNK_LINES:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


async def import_bundle(svc: Services, path: Path, *, institution: str, actor: str) -> dict[str, Any]:
    report = _Report()
    try:
        data = loads(await asyncio.to_thread(path.read_bytes))
        kind, items = bundle_items(data)
        result = await ingest_items(
            svc, items, institution=institution, actor=actor, atomic=kind == "transaction", kind=kind
        )
    except ValueError as e:  # not JSON
        report.error(None, {"expression": ["Bundle"], "diagnostics": f"not JSON: {e.__class__.__name__}"})
        return report.as_dict(format="bundle", stored=False)
    except IngestRefused as e:
        for x in e.issues:
            report.error(None, x)
        report.refused = len(e.issues)
        return report.as_dict(format="bundle", stored=False)
    report.add(result, by_line=False)
    return report.as_dict(format="bundle", kind=kind, stored=result.stored)


async def import_ndjson(svc: Services, path: Path, *, institution: str, actor: str, ctx: JobContext | None = None):  # noqa: ANN201
    report = _Report()
    lines = 0
    for chunk in _lines(path):
        lines += len(chunk)
        result = await ingest_items(
            svc, ndjson_items(chunk), institution=institution, actor=actor, atomic=False, kind="import"
        )
        report.add(result, by_line=True)
        if ctx is not None:
            await ctx.progress(lines, None, refused=report.refused)
    return report.as_dict(format="ndjson", lines=lines)


async def import_job(svc: Services, ctx: JobContext) -> dict[str, Any]:
    p = ctx.params
    path = Path(p["path"])
    try:
        if p.get("format") == "ndjson":
            return await import_ndjson(svc, path, institution=p["institution"], actor=p["actor"], ctx=ctx)
        return await import_bundle(svc, path, institution=p["institution"], actor=p["actor"])
    finally:
        await asyncio.to_thread(path.unlink, missing_ok=True)


def register(svc: Services) -> None:
    svc.job_handler(IMPORT, import_job)
