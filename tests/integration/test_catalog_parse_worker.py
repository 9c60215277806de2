"""A big MARC file is parsed in a worker process: what it sends is stored and indexed as in-process parsing would.

The worker sends each record's model, its JSON text and content hash, its cluster key and the search analysis
of its text. These tests load corpus files through a real worker (the size threshold lowered to nothing) and hold
every stored row, every search document and the load's report to what parsing in this process gives.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import queue
import sys
import threading
import time
import traceback
from pathlib import Path

import pytest
from sqlalchemy import select

from federation.bootstrap import BULK_THRESHOLD2
from library.catalog import indexing, tasks
from library.catalog.models import BibRecordRow
from library.catalog.store import content_hash, to_json
from search.analysis import index_strings
from search.engine import FieldKind
from search.query import MatchAll, Term
from tests.fixtures import marc_corpus as mc

FILES = [  # file, library, holdings preset
    ("marc21_utf8.mrc", "CQL", "marc21_952"),
    ("unimarc_gbk.mrc", "SCL", "cnmarc_905"),
    ("marc21_marc8.mrc", "CDL", "marc21_952"),
    ("broken_truncated_middle.mrc", "CQL", "marc21_952"),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return mc.write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture
def workers(monkeypatch: pytest.MonkeyPatch) -> list[tasks._Worker]:
    """Every file goes to a parse worker; the list records each worker started."""
    started: list[tasks._Worker] = []

    class Counted(tasks._Worker):
        def __init__(self, *args: object) -> None:
            started.append(self)
            super().__init__(*args)

    monkeypatch.setattr(tasks, "_Worker", Counted)
    monkeypatch.setattr(tasks, "PARSE_WORKER_MIN_BYTES", 0)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    return started


def parsed_here(path: Path, library: str, holdings: str) -> tuple[dict, tasks.IngestReport]:
    """(library, control number) → the record as this process parses it; and the rejections."""
    report = tasks.IngestReport()
    records = {}
    for inc in tasks._parsed(path, library, "auto", "auto", holdings, report):
        records[library, inc.bib.control_number] = (inc.bib, inc.marc)
    return records, report


async def test_what_a_worker_parsed_is_stored_and_indexed_as_here(svc, corpus, workers, monkeypatch) -> None:
    expected = {}
    rejected = 0
    for name, library, holdings in FILES:
        records, want = parsed_here(corpus[name], library, holdings)
        report = await tasks.ingest_file(svc, corpus[name], library=library, holdings=holdings, actor="test")
        assert report.rejections == want.rejections
        rejected += len(report.rejections)
        assert report.added + report.updated + report.unchanged == len(records)
        expected.update(records)
    assert len(workers) == len(FILES)  # each file went through a worker
    assert rejected > 0

    async with svc.db.reader() as s:
        rows = (await s.execute(select(BibRecordRow))).scalars().all()
        assert {(r.library, r.control_number) for r in rows} == set(expected)
        for row in rows:
            bib, marc = expected[row.library, row.control_number]
            data = to_json(bib)
            assert row.data == json.loads(json.dumps(data))  # the worker's text, read back
            assert row.content_hash == content_hash(data)
            assert row.marc == marc
        docs, gone = await indexing.documents(s, sorted({r.work_id for r in rows}))
    assert not gone

    # the engine holds what a rebuild from the database would give it
    result = await svc.search.search(indexing.INDEX, MatchAll(), limit=100)
    assert result.total == len(docs)
    stored = {h.id: h.stored["display"] for h in result.hits}
    assert stored == {d.id: d.values["display"] for d in docs}
    for doc in docs:
        for title in doc.values["title"]:
            hits = await svc.search.search(indexing.INDEX, Term(title, field="title"), limit=100)
            assert doc.id in {h.id for h in hits.hits}, title

    # a reload parsed in this process finds every record unchanged: the worker's content hashes are ours
    monkeypatch.setattr(tasks, "PARSE_WORKER_MIN_BYTES", 2**62)
    for name, library, holdings in FILES:
        records, _ = parsed_here(corpus[name], library, holdings)
        report = await tasks.ingest_file(svc, corpus[name], library=library, holdings=holdings, actor="test")
        assert (report.added, report.updated, report.unchanged) == (0, 0, len(records))
    assert len(workers) == len(FILES)


def test_a_records_analysis_covers_every_text_of_its_document(corpus) -> None:
    """What a worker analyses for a record is all the analysis its work's document needs, and is the engines'."""
    text_fields = {f.name: f.analyzer or "text" for f in indexing.SCHEMA.fields if f.kind is FieldKind.TEXT}
    seen = 0
    for name, library, holdings in FILES:
        records, _ = parsed_here(corpus[name], library, holdings)
        bibs = [bib for bib, _ in records.values()]
        memo = {}
        for bib in bibs:
            analysed = indexing.analysed(bib)
            assert all(v == index_strings(*k) for k, v in analysed.items())
            memo.update(analysed)
        work = type("W", (), {"id": "w", "title": bibs[0].title, "year": None})
        rows = [type("R", (), {"library": library, "deleted": False})] * len(bibs)
        doc = indexing.build_document(work, rows, [], {}, bibs)  # every record in one work: every text value
        for field, analyzer in text_fields.items():
            for value in doc.values[field]:
                assert (value, analyzer) in memo, (field, value)
                seen += 1
    assert seen > 20


async def test_a_load_that_fails_stops_its_worker_and_the_thread_reading_it(svc, corpus, workers, monkeypatch) -> None:
    async def failing(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(tasks, "store_batch", failing)
    with pytest.raises(RuntimeError, match="went away"):
        await tasks.ingest_file(svc, corpus["marc21_utf8.mrc"], library="CQL", holdings="marc21_952", actor="test")
    assert len(workers) == 1
    assert workers[0].process.poll() is not None and workers[0].pipe.closed
    assert not [t for t in threading.enumerate() if t.name == "catalog-parse-reader"]


async def test_a_worker_that_dies_mid_file_fails_the_load_and_keeps_what_was_stored(
    svc, corpus, workers, monkeypatch
) -> None:
    """The worker's second frame never comes: the first batch stays stored, the load reports the failure."""
    real = tasks._Worker.next_frame
    calls = []

    def dying(self: tasks._Worker) -> object:
        calls.append(1)
        if len(calls) == 2:
            self.process.kill()
            self.process.wait()
            return ("died", self.process.returncode)
        return real(self)

    monkeypatch.setattr(tasks._Worker, "next_frame", dying)
    with pytest.raises(RuntimeError, match="parse worker failed"):
        await tasks.ingest_file(svc, corpus["marc21_utf8.mrc"], library="CQL", holdings="marc21_952", actor="test")
    records, _ = parsed_here(corpus["marc21_utf8.mrc"], "CQL", "marc21_952")
    async with svc.db.reader() as s:
        stored = (await s.execute(select(BibRecordRow.control_number))).scalars().all()
    assert sorted(stored) == sorted(cn for _, cn in records)
    assert not [t for t in threading.enumerate() if t.name == "catalog-parse-reader"]


async def test_a_load_keeps_full_collections_away_until_it_ends(svc, corpus, monkeypatch) -> None:
    seen = []
    real = tasks.store_batch

    async def watching(*args: object, **kwargs: object) -> object:
        seen.append(gc.get_threshold()[2])
        return await real(*args, **kwargs)

    monkeypatch.setattr(tasks, "store_batch", watching)
    before = gc.get_threshold()
    await tasks.ingest_file(svc, corpus["marc21_utf8.mrc"], library="CQL", holdings="marc21_952", actor="test")
    assert seen and set(seen) == {max(BULK_THRESHOLD2, before[2])}
    assert gc.get_threshold() == before


async def test_a_load_cancelled_while_it_waits_for_the_worker_leaves_no_thread_waiting(
    svc, corpus, workers, monkeypatch
) -> None:
    real = tasks._Worker.next_frame

    def slow(self: tasks._Worker) -> object:
        time.sleep(0.5)
        return real(self)

    monkeypatch.setattr(tasks._Worker, "next_frame", slow)
    load = asyncio.ensure_future(
        tasks.ingest_file(svc, corpus["marc21_utf8.mrc"], library="CQL", holdings="marc21_952", actor="test")
    )
    await asyncio.sleep(0.2)  # the load waits for its first batch
    load.cancel()
    with pytest.raises(asyncio.CancelledError):
        await load
    await asyncio.sleep(0.2)

    def waiting_on_frames() -> list[str]:
        return [
            t.name
            for t in threading.enumerate()
            if t.ident in sys._current_frames()
            and any(
                f.name == "get" and f.filename == queue.__file__
                for f in traceback.extract_stack(sys._current_frames()[t.ident])
            )
        ]

    assert waiting_on_frames() == []
    assert workers[0].process.poll() is not None
    assert not [t for t in threading.enumerate() if t.name == "catalog-parse-reader"]


def test_stopping_frees_a_thread_left_waiting_for_a_frame() -> None:
    """What a cancelled load leaves behind: a thread in ``frames.get()`` that no frame will reach."""

    class Stopped:
        pipe = open(os.devnull, "rb")  # noqa: SIM115 - closed by _stop_reading

        def stop(self) -> None:
            pass

    frames: queue.Queue = queue.Queue(maxsize=tasks.READ_AHEAD)
    reader = threading.Thread(target=lambda: None)
    reader.start()
    reader.join()
    got = []
    waiting = threading.Thread(target=lambda: got.append(frames.get()), daemon=True)
    waiting.start()
    tasks._stop_reading(Stopped(), reader, frames)  # type: ignore[arg-type]
    waiting.join(2)
    assert not waiting.is_alive() and got[0][0] == "stopped"


async def test_a_reload_tells_the_worker_to_stop_analysing_and_a_changed_load_to_go_on(
    svc, tmp_path, workers, monkeypatch
) -> None:
    """The loading process advises the worker after each batch: analyses for records that turn out unchanged
    are the worker's time lost, and the worker is what a reload waits for."""
    monkeypatch.setattr(tasks, "FIRST_BATCH", 20)
    monkeypatch.setattr(tasks, "BATCH", 20)
    path = tmp_path / "generated.mrc"
    mc.write_generated(path, 2000)
    analysed: list[bool] = []
    real = tasks._Worker.next_frame

    def watched(self: tasks._Worker) -> object:
        frame = real(self)
        if frame[0] == "batch" and frame[1]:
            analysed.append(all(inc.analysed for inc in frame[1]))
        return frame

    monkeypatch.setattr(tasks._Worker, "next_frame", watched)
    first = await tasks.ingest_file(svc, path, library="CQL", actor="test")
    assert first.added == 2000 and analysed == [True] * 100
    analysed.clear()
    again = await tasks.ingest_file(svc, path, library="CQL", actor="test")
    assert again.unchanged == 2000
    # the advice reaches the worker some batches late (it parses ahead): after that, nothing is analysed
    assert analysed[0] is True and analysed[-50:] == [False] * 50
    analysed.clear()
    other = await tasks.ingest_file(svc, path, library="SCL", actor="test")  # new to SCL: every batch changes
    assert other.added == 2000 and analysed == [True] * 100
