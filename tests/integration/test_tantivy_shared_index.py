"""Two engines on one embedded index (a running server and ``twincity catalog search``): tantivy allows one writer,
so the second opens the index to read only. It must find what the writer committed, follow its later commits and
its rebuilds, touch no file of the writer's, and refuse every write with IndexReadOnly, never LockBusy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

import search.tantivy_engine as te
from search.engine import Document, IndexReadOnly
from search.query import MatchAll, Term
from search.tantivy_engine import TantivyEngine
from tests.contract.corpus import DOCS, SCHEMA

INDEX = "catalogue"


async def batches(docs: Sequence[Document]) -> AsyncIterator[list[Document]]:
    yield list(docs)


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[TantivyEngine]:
    engine = TantivyEngine(tmp_path / "search")
    await engine.open(INDEX, SCHEMA)
    await engine.upsert(INDEX, DOCS[:5])
    await engine.refresh(INDEX)
    yield engine
    await engine.close()


async def ids(engine: TantivyEngine, query: object = None) -> set[str]:
    result = await engine.search(INDEX, query or MatchAll(), limit=100)
    return {h.id for h in result.hits}


async def test_a_second_engine_reads_what_the_writer_committed_and_refuses_writes(
    writer: TantivyEngine, tmp_path: Path
) -> None:
    leftover = tmp_path / "search" / INDEX / "v00000000000000000001-leftover"
    leftover.mkdir()  # what a writer's open would clear; a reader must not
    reader = TantivyEngine(tmp_path / "search")
    try:
        await reader.open(INDEX, SCHEMA)
        assert await ids(reader) == {d.id for d in DOCS[:5]}
        assert await reader.count(INDEX) == 5
        hits = await reader.search(INDEX, Term("红楼梦"), limit=5)
        assert hits.total >= 1
        with pytest.raises(IndexReadOnly):
            await reader.upsert(INDEX, DOCS[5:6])
        with pytest.raises(IndexReadOnly):
            await reader.delete(INDEX, [DOCS[0].id])
        with pytest.raises(IndexReadOnly):
            await reader.refresh(INDEX)
        with pytest.raises(IndexReadOnly):
            await reader.rebuild(INDEX, batches(DOCS))
        assert leftover.is_dir()
        # the writer goes on writing, unharmed by the reader
        await writer.upsert(INDEX, DOCS[5:8])
        await writer.refresh(INDEX)
        assert await writer.count(INDEX) == 8
    finally:
        await reader.close()


async def test_the_reader_follows_later_commits_and_a_rebuild(
    writer: TantivyEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(te, "_FOLLOW_S", 0.0)
    reader = TantivyEngine(tmp_path / "search")
    try:
        await reader.open(INDEX, SCHEMA)
        await writer.upsert(INDEX, DOCS[5:7])
        await writer.refresh(INDEX)
        assert await ids(reader) == {d.id for d in DOCS[:7]}
        # a rebuild writes a new version directory and removes the old one: the reader moves to the new one
        await writer.rebuild(INDEX, batches(DOCS[3:]))
        assert await ids(reader) == {d.id for d in DOCS[3:]}
    finally:
        await reader.close()


async def test_the_reader_reloads_at_most_once_a_second(writer: TantivyEngine, tmp_path: Path) -> None:
    reader = TantivyEngine(tmp_path / "search")
    try:
        await reader.open(INDEX, SCHEMA)
        await writer.upsert(INDEX, DOCS[5:6])
        await writer.refresh(INDEX)
        assert await reader.count(INDEX) == 5  # opened a moment ago: not reloaded yet
    finally:
        await reader.close()


async def test_a_reader_becomes_the_writer_once_the_other_lets_go(tmp_path: Path) -> None:
    """A server started while a command held the index: read only at first, the writer at its first write after."""
    command = TantivyEngine(tmp_path / "search")
    await command.open(INDEX, SCHEMA)
    await command.upsert(INDEX, DOCS[:3])
    await command.refresh(INDEX)
    server = TantivyEngine(tmp_path / "search")
    try:
        await server.open(INDEX, SCHEMA)
        with pytest.raises(IndexReadOnly):
            await server.upsert(INDEX, DOCS[3:4])
        await command.close()
        await server.upsert(INDEX, DOCS[3:6])
        await server.refresh(INDEX)
        assert await ids(server) == {d.id for d in DOCS[:6]}
        await server.rebuild(INDEX, batches(DOCS))
        assert await server.count(INDEX) == len(DOCS)
    finally:
        await server.close()


async def test_a_process_that_only_reads_never_takes_the_writer(tmp_path: Path) -> None:
    """``twincity run --workers N``: every server process opens the index, and only the one running the outbox
    relay writes it. Whichever opens first, the reading ones leave the writer to it, even while it is free."""
    reading = TantivyEngine(tmp_path / "search", writes=False)
    writing = TantivyEngine(tmp_path / "search")
    try:
        await reading.open(INDEX, SCHEMA)  # first: an engine that writes would have taken the writer here
        await writing.open(INDEX, SCHEMA)
        await writing.upsert(INDEX, DOCS[:3])
        await writing.refresh(INDEX)
        with pytest.raises(IndexReadOnly, match="only reads"):
            await reading.upsert(INDEX, DOCS[3:4])
        await writing.close()  # the writer is free now, and still not taken
        with pytest.raises(IndexReadOnly, match="only reads"):
            await reading.refresh(INDEX)
        with pytest.raises(IndexReadOnly, match="only reads"):
            await reading.rebuild(INDEX, batches(DOCS))
        await asyncio.sleep(te._FOLLOW_S)  # a reading engine follows the writer's commits this often
        assert await ids(reading) == {d.id for d in DOCS[:3]}
        writing = TantivyEngine(tmp_path / "search")  # the writing process restarted
        await writing.open(INDEX, SCHEMA)
        await writing.upsert(INDEX, DOCS[3:4])
        await writing.refresh(INDEX)
    finally:
        await reading.close()
        await writing.close()


@pytest.mark.parametrize(
    ("run_background", "broker", "writes"),
    [(True, None, True), (False, None, False), (True, "redis://127.0.0.1:6379/0", False)],
)
def test_only_the_process_running_the_relay_writes_the_index(
    tmp_path: Path, run_background: bool, broker: str | None, writes: bool
) -> None:
    """The server process that runs the jobs and the relay writes the embedded index; one beside it (``--workers``)
    or in front of a broker's workers (which run them) only reads it."""
    from federation.app import SERVICES, create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(tmp_path, broker_url=broker), run_background=run_background)
    assert app[SERVICES].search.writes is writes
