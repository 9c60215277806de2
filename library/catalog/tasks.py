"""Catalogue jobs: load a MARC file, rebuild the index; and the handler that keeps search documents current.

Every batch commits its records together with a ``catalog.works_changed``
outbox event, so a crash after the commit leaves the event to be relayed on
the next start: the index catches up, nothing is lost.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select, text, update

from federation import child
from federation.audit.service import Record
from federation.bootstrap import bulk_load
from federation.db import OutboxMessage, new_id, utcnow
from federation.jobs import outbox
from federation.jobs.service import JobContext, enqueue_unless_pending
from federation.services import Services
from library.catalog import indexing, marc
from library.catalog.holdings import PRESETS
from library.catalog.mapping import to_bib
from library.catalog.models import BibRecordRow, ItemRow, Work, WorkIsbn
from library.catalog.store import BatchResult, Incoming, store_batch

log = logging.getLogger(__name__)

REINDEX = "catalog.reindex"

# Records per transaction. Big ones: SQLite's cost is writing the pages a transaction dirties (WAL, then the
# checkpoint), and with random ids in every index a batch of 4,000 dirties barely more pages than one of 1,000.
BATCH = 4000
# ... or fewer, when the records are big (MARC bytes): memory stays flat. Up to four batches are alive at once (two
# read ahead from the parse worker, one being stored, one being indexed): with 8 MB a 1 GB file of 10 kB records
# peaked at 473-491 MB resident, with 4 MB at 391 MB, as fast. Records of usual size fill BATCH first.
BATCH_BYTES = 4 * 2**20
FIRST_BATCH = 500  # a parse worker's first batch: storing starts while it parses the next
REFRESH_SECONDS = 5.0  # during a load, new records become searchable at least this often
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
            raw = marc.utf8_iso2709(entry)  # UTF-8 ISO 2709, kept for export, OAI-PMH and SRU
        except Exception:  # noqa: BLE001 - a record pymarc cannot serialise is still searchable
            raw = None
        yield Incoming(bib, raw)


PARSE_WORKER_MIN_BYTES = 8 * 2**20  # smaller files are parsed in this process: a worker takes a second to start


class _Rejections:
    """The report's stand-in in a parse worker: rejections travel with the next batch."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int | None, str, str | None]] = []

    def reject(self, position: int, offset: int | None, reason: str, control_number: str | None) -> None:
        self.items.append((position, offset, reason, control_number))


def _parse_main() -> None:
    """Entry point of a parse worker process (see ``_start_worker``): reads, maps and prepares the records and
    writes them to the pipe named on the command line, in length-prefixed pickled batches. Its stdin carries the
    loading process's advice (``_Worker.advise``): whether the records are worth analysing for the index."""
    fd = int(sys.argv[1])
    path, library, fmt, encoding, holdings, first_batch, batch_size = json.loads(sys.argv[2])
    os.set_blocking(0, False)
    analyse = True

    def advised() -> bool:
        try:
            news = os.read(0, 256)
        except BlockingIOError:
            return analyse
        return analyse if not news else news[-1:] == b"1"  # the latest advice; none (EOF) changes nothing

    with os.fdopen(fd, "wb") as out:

        def send(value: Any) -> None:
            out.write(child.frame(value))

        try:
            rejections = _Rejections()
            batch: list[Any] = []
            size = 0
            limit = first_batch  # the loading process waits for the first batch: it comes early
            with bulk_load():
                for incoming in _parsed(Path(path), library, fmt, encoding, holdings, rejections):  # type: ignore[arg-type]
                    if analyse:
                        incoming.analysed = indexing.analysed(incoming.bib)  # here, on the worker's core
                    batch.append(incoming.shipped())
                    size += len(incoming.marc or b"")
                    if len(batch) >= limit or size >= BATCH_BYTES:
                        send(("batch", batch, rejections.items))
                        batch, rejections.items, size, limit = [], [], 0, batch_size
                        analyse = advised()
            send(("batch", batch, rejections.items))
            send(("end",))
        except BrokenPipeError:
            pass  # the loading process went away
        except Exception as e:  # noqa: BLE001 - the loading process raises it
            send(("error", f"{e.__class__.__name__}: {e}"))


class _Worker:
    """A parse worker process and the pipe it writes to. Started as a fresh interpreter (never a fork of a
    process running threads, and unlike multiprocessing's spawn it does not re-run the caller's ``__main__``)."""

    def __init__(self, path: Path, library: str, fmt: str, encoding: str, holdings: str | None) -> None:
        read_fd, write_fd = os.pipe()
        child.widen(read_fd)
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
                [
                    sys.executable,
                    "-c",
                    "from library.catalog.tasks import _parse_main; _parse_main()",
                    str(write_fd),
                    json.dumps([str(path), library, fmt, encoding, holdings, FIRST_BATCH, BATCH]),
                ],
                pass_fds=(write_fd,),
                stdin=subprocess.PIPE,
                env=child.environment(),
            )
            os.set_blocking(self.process.stdin.fileno(), False)  # type: ignore[union-attr]
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self.pipe = os.fdopen(read_fd, "rb")

    def next_frame(self) -> Any:
        head = self.pipe.read(child.HEAD.size)
        if len(head) < child.HEAD.size:
            self.process.wait()
            return ("died", self.process.returncode)
        (size,) = child.HEAD.unpack(head)
        data = self.pipe.read(size)
        if len(data) < size:
            self.process.wait()
            return ("died", self.process.returncode)
        frame = pickle.loads(data)  # noqa: S301 - our own child process wrote it
        if frame[0] == "batch":
            return ("batch", [Incoming.received(x) for x in frame[1]], frame[2])
        return frame

    def advise(self, analyse: bool) -> None:
        """Tell the worker whether its next batches are worth analysing for the index. A reload of records
        that have not changed stores nothing and indexes nothing: there the analysis is the worker's time lost,
        and the worker is what such a load waits for."""
        with contextlib.suppress(OSError):  # a full pipe (advice not read yet) or a worker gone
            os.write(self.process.stdin.fileno(), b"1" if analyse else b"0")  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # type: ignore[union-attr]


def _start_worker(path: Path, library: str, fmt: str, encoding: str, holdings: str | None) -> _Worker | None:
    """A parse worker for a big file, so parsing (one core) runs beside storing and indexing (the other one);
    None for a small file or where no process can be started: the caller parses in-process."""
    try:
        if path.stat().st_size < PARSE_WORKER_MIN_BYTES or (os.cpu_count() or 1) < 2:
            return None
        return _Worker(path, library, fmt, encoding, holdings)
    except Exception as e:  # noqa: BLE001 - fall back to parsing here
        log.info("catalogue load: no parse worker (%s), parsing in-process", e)
        return None


READ_AHEAD = 2  # parsed batches read from the worker ahead of the one being stored (bounds memory)


def _read_frames(worker: _Worker, frames: queue.Queue[Any]) -> None:
    """A thread's loop: the worker's frames, read and unpickled as they come, into ``frames``. The worker goes on
    parsing while a batch is stored and indexed, instead of waiting for the batch before it to be taken."""
    try:
        while True:
            frame = worker.next_frame()
            frames.put(frame)
            if frame[0] != "batch":
                return
    except BaseException as e:  # noqa: BLE001 - the load sees it as the worker's failure
        frames.put(("died", f"{e.__class__.__name__}: {e}"))


def _stop_reading(worker: _Worker, reader: threading.Thread, frames: queue.Queue[Any]) -> None:
    worker.stop()  # the reader's next read ends: the pipe's writer is gone
    while reader.is_alive():  # it may be waiting to put a frame nobody will take
        with contextlib.suppress(queue.Empty):
            frames.get_nowait()
        reader.join(0.01)
    worker.pipe.close()
    with contextlib.suppress(queue.Full):  # a load cancelled while it waited left a thread in frames.get: free it
        frames.put_nowait(("stopped", None))


async def _batches(
    path: Path, library: str, fmt: str, encoding: str, holdings: str | None, report: IngestReport
) -> AsyncIterator[list[Incoming]]:
    """The file's records in batches (``BATCH``, ``BATCH_BYTES``), parsed by a worker process when the file is big."""
    worker = await asyncio.to_thread(_start_worker, path, library, fmt, encoding, holdings)
    if worker is not None:
        frames: queue.Queue[Any] = queue.Queue(maxsize=READ_AHEAD)
        reader = threading.Thread(target=_read_frames, args=(worker, frames), name="catalog-parse-reader", daemon=True)
        reader.start()
        try:
            first = True
            while True:
                frame = await asyncio.to_thread(frames.get)
                if frame[0] == "batch":
                    first = False
                    for r in frame[2]:
                        report.reject(*r)
                    if frame[1]:
                        changed, unchanged = report.added + report.updated, report.unchanged
                        yield frame[1]
                        # stored: mostly unchanged records (a reload) are not worth the worker's analysis
                        changed, unchanged = report.added + report.updated - changed, report.unchanged - unchanged
                        worker.advise(changed >= unchanged)
                elif frame[0] == "end":
                    return
                elif first:  # it could not start, or the file fails at once: in-process, the same happens visibly
                    log.warning("catalogue load: parse worker: %s %s; parsing in-process", *frame)
                    break
                else:
                    raise RuntimeError(f"the parse worker failed: {frame[1]}")
        finally:
            await asyncio.to_thread(_stop_reading, worker, reader, frames)
    batch: list[Incoming] = []
    size = 0
    for incoming in _parsed(path, library, fmt, encoding, holdings, report):
        batch.append(incoming)
        size += len(incoming.marc or b"")
        if len(batch) >= BATCH or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class _IndexQueue:
    """The process's catalogue index writes, one after another in the order they were enqueued.

    A load enqueues a batch's indexing the moment the batch commits (under ``order``, so two loads cannot swap
    a commit and its indexing), and the relay's ``reindex_works`` queues behind them: a document built from a
    batch is never applied after one built from a later state of the database.
    """

    def __init__(self) -> None:
        self.order = asyncio.Lock()
        self._tail: asyncio.Future[None] | None = None

    def enqueue(self, job: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
        loop = asyncio.get_running_loop()
        prev, done = self._tail, loop.create_future()
        self._tail = done

        async def run() -> Any:
            try:
                if prev is not None:
                    await asyncio.wait([prev])
                return await job()
            finally:
                done.set_result(None)
                if self._tail is done:
                    self._tail = None

        return asyncio.ensure_future(run())


def _index_queue(svc: Services) -> _IndexQueue:
    q = svc.extras.get("catalog.index_queue")
    if q is None:
        q = svc.extras["catalog.index_queue"] = _IndexQueue()
    return q


class _Indexer:
    """Keeps the search index in step with a load, batch by batch, without a commit per batch.

    Each batch's documents are built from the batch itself (only the other records of works it joined are
    read back) and handed to the engine while the next batch is being stored. The engine commits with its own
    cadence; every ``REFRESH_SECONDS`` and at the end of the load we force a commit, and only then mark the
    batches' ``catalog.works_changed`` events published. A crash before that leaves the events unpublished,
    and the outbox relay rebuilds those works on the next start: nothing is lost.
    """

    AHEAD = 1  # batches being indexed while the next one is stored (bounds memory)

    def __init__(self, svc: Services) -> None:
        self.svc = svc
        self.queue = _index_queue(svc)
        self.running: collections.deque[asyncio.Task[Any]] = collections.deque()
        self.commits: list[asyncio.Task[Any]] = []
        self.pending: list[str] = []  # outbox ids of batches handed to the engine, not yet committed there
        self.last_refresh = time.monotonic()

    async def submit(self, result: BatchResult, event_id: str) -> None:
        """Index a committed batch (called under ``queue.order``, right after the commit); waits only when
        ``AHEAD`` batches are still being indexed."""
        self.running.append(self.queue.enqueue(lambda: self._index(result, event_id)))
        while len(self.running) > self.AHEAD:
            await self.running.popleft()

    async def _index(self, result: BatchResult, event_id: str) -> None:
        from library.catalog.service import ensure_index

        try:
            await ensure_index(self.svc)
            async with self.svc.db.reader() as s:
                docs, gone = await indexing.documents(s, sorted(result.works), result)
            if docs:
                await self.svc.search.upsert(indexing.INDEX, docs, analysed=result.analysed)
            if gone:
                await self.svc.search.delete(indexing.INDEX, gone)
        except Exception as e:  # noqa: BLE001 - the event stays unpublished: the relay retries it, the load goes on
            log.warning("catalogue load: indexing a batch failed, left to the outbox relay: %s", e)
            return
        self.pending.append(event_id)
        if time.monotonic() - self.last_refresh >= REFRESH_SECONDS:
            self.commits.append(asyncio.ensure_future(self._commit()))  # the next batches go on meanwhile

    async def _commit(self) -> None:
        """Make everything handed to the engine so far searchable, then mark those batches' events published."""
        self.last_refresh = time.monotonic()
        ids, self.pending = self.pending, []
        if not ids:
            return
        try:
            await self.svc.search.refresh(indexing.INDEX)  # after every write queued before it
            async with self.svc.db.uow() as uow:
                await uow.session.execute(
                    update(OutboxMessage)
                    .where(OutboxMessage.id.in_(ids), OutboxMessage.published_at.is_(None))
                    .values(published_at=utcnow())
                )
                await uow.commit()
        except Exception as e:  # noqa: BLE001 - unpublished events are the relay's to deliver
            log.warning("catalogue load: committing the index failed, left to the outbox relay: %s", e)

    async def finish(self) -> None:
        """Wait for every batch, commit the index once more and mark the rest published."""
        while self.running:
            with contextlib.suppress(Exception):
                await self.running.popleft()
        await self._commit()
        for task in self.commits:
            with contextlib.suppress(Exception):
                await task


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
    """Load one MARC file into the catalogue; re-loading the same file changes nothing.

    Every record is searchable when this returns (the index is refreshed at the end, and every few seconds
    during the load).
    """
    report = IngestReport()
    started = time.perf_counter()
    batch: list[Incoming] = []
    indexer = _Indexer(svc)

    async def flush() -> None:
        if not batch:
            return
        async with svc.db.uow() as uow:
            result = await store_batch(uow.session, library, batch, actor=actor)
            event_id = None
            if result.works:
                # the batch's event, stored with it; this load delivers it itself (below), so no doorbell rings
                event = OutboxMessage(id=new_id(), topic=WORKS_CHANGED, payload={"work_ids": sorted(result.works)})
                uow.session.add(event)
                event_id = event.id
            async with indexer.queue.order:
                await uow.commit()
                if event_id is not None:
                    await indexer.submit(result, event_id)
        report.add(result)
        batch.clear()
        if progress is not None:
            report.seconds = time.perf_counter() - started
            await progress(report)

    with bulk_load():
        try:
            async with contextlib.aclosing(_batches(path, library.upper(), fmt, encoding, holdings, report)) as batches:
                async for parsed in batches:
                    batch.extend(parsed)
                    await flush()
        finally:
            await indexer.finish()  # on failure too: what is left unpublished is the relay's
    await outbox.relay(svc)  # anything else pending (an earlier crash's events, say)
    await _analyse(svc, report)
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


ANALYSE_AFTER = 1000  # records a load added or changed past which PostgreSQL's statistics are refreshed at its end
_LOADED = (Work.__table__, WorkIsbn.__table__, BibRecordRow.__table__, ItemRow.__table__)


async def _analyse(svc: Services, report: IngestReport) -> None:
    """After a big load on PostgreSQL, the statistics of the tables it filled. Until autovacuum analyses them (a
    minute or more after the load), the planner guesses their sizes: measured so, a check-in's lookup of one
    copy read every work and every active loan (14.8 ms, against 0.18 ms once these four tables were analysed).
    SQLite is left as it is: no ``sqlite_stat1`` is made, so its plans stay as they were."""
    if svc.db.is_sqlite or report.added + report.updated < ANALYSE_AFTER:
        return
    try:
        async with svc.db.statement_engine.connect() as conn:
            await conn.execute(text("ANALYZE " + ", ".join(t.name for t in _LOADED)))
    except Exception as e:  # noqa: BLE001 - the load is stored; autovacuum analyses the tables later anyway
        log.warning("catalogue load: analysing the loaded tables failed: %s", e)


REINDEX_CHUNK = 1000  # works read and rebuilt at a time (well under any driver's limit of bound parameters)


async def reindex_works(svc: Services, work_ids: Sequence[str]) -> None:
    """Rebuild the search documents of these works (idempotent), then commit the index once."""
    from library.catalog.service import ensure_index

    await ensure_index(svc)
    engine = svc.search

    async def job() -> None:  # behind any batch a load is indexing: this reads a later state of the database
        for start in range(0, len(work_ids), REINDEX_CHUNK):
            async with svc.db.reader() as s:
                docs, gone = await indexing.documents(s, work_ids[start : start + REINDEX_CHUNK])
            if docs:
                await engine.upsert(indexing.INDEX, docs)
            if gone:
                await engine.delete(indexing.INDEX, gone)

    await _index_queue(svc).enqueue(job)
    await engine.refresh(indexing.INDEX)


async def on_works_changed(svc: Services, payloads: list[dict[str, Any]]) -> None:
    """Every ``catalog.works_changed`` of a relay pass at once: each work rebuilt once, however many of the pass's
    events name it (fifty copies of one title lent in a second), and the index committed once."""
    await reindex_works(svc, sorted({w for p in payloads for w in p.get("work_ids", ())}))


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


async def rebuild_if_empty(svc: Services) -> str | None:
    """Queue a rebuild when the search index holds nothing while the database holds works; the job's id, or None.

    An index is empty beside a full database after a change of the engine's mapping (the engine starts a new
    version, which only a rebuild fills), when the index's directory was lost, or after a restore of the database
    alone (backups do not hold the index). Every server process checks once as it starts; a rebuild already queued
    or running is not queued twice. Searches answer from the empty index until the rebuild swaps the full one in.
    """
    from library.catalog.service import ensure_index

    async with svc.db.reader() as s:
        if (await s.execute(select(Work.id).limit(1))).first() is None:
            return None
    await ensure_index(svc)
    if await svc.search.count(indexing.INDEX) > 0:
        return None
    job_id = await enqueue_unless_pending(svc, REINDEX, created_by="system:start")
    if job_id is not None:
        log.warning(
            "the search index %r is empty while the database holds works: rebuild queued (job %s)",
            indexing.INDEX,
            job_id,
        )
    return job_id


def register(svc: Services) -> None:
    svc.job_handler("catalog.ingest", ingest_job)
    svc.job_handler(REINDEX, reindex_job)
    svc.on_serve(rebuild_if_empty)
    svc.on_events(WORKS_CHANGED, on_works_changed)
