"""A work's search document is rebuilt whenever a copy is lent or returned; its records' data is read and decoded
only when this process has not decoded that very content before (``indexing.PARSED``, keyed by the record's id and
the hash of its stored data). A changed record is read again, whatever the cache holds.

Run on SQLite and (with TWINCITY_TEST_DATABASE_URL) on PostgreSQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from sqlalchemy import event, select, update

from library.catalog import demo as demo_catalogue
from library.catalog import indexing
from library.catalog.models import BibRecordRow, Work
from library.catalog.store import content_hash


@pytest.fixture
async def catalogue(svc):  # noqa: ANN001, ANN201
    await demo_catalogue.load(svc, per_library=8)
    indexing.PARSED.clear()
    yield svc
    indexing.PARSED.clear()


@contextlib.contextmanager
def data_reads(svc) -> Iterator[list[str]]:  # noqa: ANN001
    """The statements that read records' data, while the block runs."""
    seen: list[str] = []

    def on_execute(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        head = statement.split("FROM", 1)[0]
        if "catalog_records.data" in head:
            seen.append(statement)

    for e in {svc.db.engine, svc.db.read_engine}:
        event.listen(e.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        for e in {svc.db.engine, svc.db.read_engine}:
            event.remove(e.sync_engine, "before_cursor_execute", on_execute)


async def _documents(svc, work_ids: list[str]) -> dict[str, indexing.Document]:  # noqa: ANN001
    async with svc.db.reader() as s:
        docs, gone = await indexing.documents(s, work_ids)
    assert not gone
    return {d.id: d for d in docs}


async def test_a_rebuilt_document_reads_data_only_for_content_not_decoded_before(catalogue):
    svc = catalogue
    async with svc.db.reader() as s:
        works = list((await s.execute(select(Work.id).order_by(Work.id).limit(5))).scalars())
    with data_reads(svc) as seen:
        first = await _documents(svc, works)
    assert len(seen) == 1  # one read of every record's data
    with data_reads(svc) as seen:
        again = await _documents(svc, works)
    assert seen == []  # nothing changed: built from the decoded records
    assert {w: d.values for w, d in again.items()} == {w: d.values for w, d in first.items()}

    # one record changes (a reload with a corrected title): its new content is read, and only it
    async with svc.db.reader() as s:
        rid, data = (
            await s.execute(select(BibRecordRow.id, BibRecordRow.data).where(BibRecordRow.work_id == works[0]))
        ).first()
    changed = {**data, "title": "红楼梦（校订本）"}
    async with svc.db.uow() as uow:
        await uow.session.execute(
            update(BibRecordRow).where(BibRecordRow.id == rid).values(data=changed, content_hash=content_hash(changed))
        )
        await uow.commit()
    with data_reads(svc) as seen:
        after = await _documents(svc, works)
    assert len(seen) == 1
    assert "红楼梦（校订本）" in after[works[0]].values["title"]
    assert {w: d.values for w, d in after.items() if w != works[0]} == {
        w: d.values for w, d in first.items() if w != works[0]
    }


def test_the_cache_keeps_the_most_recently_used():
    cache = indexing._ParsedRecords(2)
    a, b, c = (object() for _ in range(3))
    cache.put(("a", "1"), a)
    cache.put(("b", "1"), b)
    assert cache.get(("a", "1")) is a  # now the most recent
    cache.put(("c", "1"), c)
    assert cache.get(("b", "1")) is None
    assert cache.get(("a", "1")) is a and cache.get(("c", "1")) is c
    assert cache.get(("a", "2")) is None  # another content of the same record
