"""Catalogue jobs: load a MARC file, rebuild the index; and the handler that keeps search documents current.

Every batch commits its records together with a ``catalog.works_changed``
outbox event, so a crash after the commit leaves the event to be relayed on
the next start: the index catches up, nothing is lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from federation.audit.service import Record
from federation.jobs import outbox
from federation.jobs.service import JobContext
from federation.services import Services
from library.catalog import indexing, marc
from library.catalog.holdings import PRESETS
from library.catalog.mapping import to_bib
from library.catalog.models import Work
from library.catalog.store import BatchResult, Incoming, store_batch

BATCH = 1000
MAX_REPORTED = 1000
WORKS_CHANGED = "catalog.works_changed"


@dataclasses.dataclass
class IngestReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    rejected: int = 0
    rejections: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def seen(self) -> int:
        return self.added + self.updated + self.unchanged + self.rejected

    def add(self, r: BatchResult) -> None:
        self.added += r.added
        self.updated += r.updated
        self.unchanged += r.unchanged
        self.deleted += r.deleted

    def reject(self, position: int, offset: int | None, reason: str, control_number: str | None) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_REPORTED:
            self.rejections.append(
                {"position": position, "offset": offset, "reason": reason, "control_number": control_number}
            )

    def as_dict(self) -> dict[str, Any]:
        rate = self.seen / self.seconds if self.seconds else 0.0
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "deleted": self.deleted,
            "rejected": self.rejected,
            "rejections": self.rejections,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(rate, 1),
        }


def _parsed(
    path: Path, library: str, fmt: str, encoding: str, holdings: str | None, report: IngestReport
) -> Iterator[Incoming]:
    config = PRESETS.get(holdings) if holdings else None
    for entry in marc.read(path, format=fmt, encoding=encoding, library=library):
        if isinstance(entry, marc.Rejection):
            report.reject(entry.position, entry.offset, entry.reason, entry.control_number)
            continue
        try:
            bib = to_bib(entry, holdings=config, library=library)
        except Exception as e:  # noqa: BLE001 - one unmappable record is reported, the load goes on
            cn = entry.record["001"].data if entry.record["001"] else None
            report.reject(entry.position, entry.offset, f"cannot map the record: {e}", cn)
            continue
        if not bib.control_number:
            report.reject(entry.position, entry.offset, "the record has no control number (001)", None)
            continue
        try:
            raw = entry.record.as_marc()  # UTF-8 ISO 2709, kept for export, OAI-PMH and SRU
        except Exception:  # noqa: BLE001 - a record pymarc cannot serialise is still searchable
            raw = None
        yield Incoming(bib, raw)


async def ingest_file(
    svc: Services,
    path: Path,
    *,
    library: str,
    fmt: str = "auto",
    encoding: str = "auto",
    holdings: str | None = None,
    actor: str,
    progress: Callable[[IngestReport], Any] | None = None,
) -> IngestReport:
    """Load one MARC file into the catalogue; re-loading the same file changes nothing."""
    report = IngestReport()
    started = time.perf_counter()
    batch: list[Incoming] = []

    async def flush() -> None:
        if not batch:
            return
        async with svc.db.uow() as uow:
            result = await store_batch(uow.session, library, batch, actor=actor)
            if result.works:
                uow.emit(WORKS_CHANGED, work_ids=sorted(result.works))
            await uow.commit()
        report.add(result)
        batch.clear()
        await outbox.relay(svc)
        if progress is not None:
            report.seconds = time.perf_counter() - started
            await progress(report)

    for incoming in _parsed(path, library.upper(), fmt, encoding, holdings, report):
        batch.append(incoming)
        if len(batch) >= BATCH:
            await flush()
    await flush()
    report.seconds = time.perf_counter() - started
    async with svc.db.uow() as uow:
        await svc.audit(
            uow,
            Record(
                action="catalog.ingest",
                actor=actor,
                actor_institution=library.upper(),
                details={k: v for k, v in report.as_dict().items() if k != "rejections"},
            ),
        )
        await uow.commit()
    return report


async def reindex_works(svc: Services, work_ids: list[str]) -> None:
    """Rebuild the search documents of these works (idempotent)."""
    from library.catalog.service import ensure_index

    await ensure_index(svc)
    engine = svc.search
    async with svc.db.reader() as s:
        docs, gone = await indexing.documents(s, work_ids)
    if docs:
        await engine.upsert(indexing.INDEX, docs)
    if gone:
        await engine.delete(indexing.INDEX, gone)
    await engine.refresh(indexing.INDEX)


async def on_works_changed(svc: Services, payload: dict[str, Any]) -> None:
    await reindex_works(svc, list(payload.get("work_ids", ())))


async def _all_documents(svc: Services, size: int = 2000):  # noqa: ANN202 - an async generator of batches
    after = ""
    while True:
        async with svc.db.reader() as s:
            ids = list(
                (await s.execute(select(Work.id).where(Work.id > after).order_by(Work.id).limit(size))).scalars()
            )
            if not ids:
                return
            docs, _ = await indexing.documents(s, ids)
        after = ids[-1]
        yield docs


async def rebuild_index(svc: Services) -> int:
    """Rebuild the whole catalogue index from the database; searches keep answering until the swap."""
    from library.catalog.service import ensure_index

    await ensure_index(svc)
    count = 0

    async def counted():  # noqa: ANN202
        nonlocal count
        async for docs in _all_documents(svc):
            count += len(docs)
            yield docs

    await svc.search.rebuild(indexing.INDEX, counted())
    return count


async def ingest_job(svc: Services, ctx: JobContext) -> dict[str, Any]:
    p = ctx.params

    async def progress(report: IngestReport) -> None:
        await ctx.progress(
            report.seen,
            None,
            added=report.added,
            updated=report.updated,
            unchanged=report.unchanged,
            rejected=report.rejected,
        )

    report = await ingest_file(
        svc,
        Path(p["path"]),
        library=p["library"],
        fmt=p.get("format", "auto"),
        encoding=p.get("encoding", "auto"),
        holdings=p.get("holdings"),
        actor=p.get("actor", "job"),
        progress=progress,
    )
    if p.get("delete_after"):
        await asyncio.to_thread(Path(p["path"]).unlink, missing_ok=True)
    return report.as_dict()


async def reindex_job(svc: Services, ctx: JobContext) -> dict[str, Any]:
    return {"documents": await rebuild_index(svc)}


def register(svc: Services) -> None:
    svc.job_handler("catalog.ingest", ingest_job)
    svc.job_handler("catalog.reindex", reindex_job)
    svc.on_event(WORKS_CHANGED, on_works_changed)
