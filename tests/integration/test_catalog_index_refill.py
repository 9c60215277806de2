"""An empty search index beside a full database is rebuilt: after a change of the engine's mapping, a lost index
directory or a restore of the database alone, the server's start queues ``catalog.reindex`` once."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import select

import search.tantivy_engine as tantivy_engine
from federation.app import SERVER_LIMITS, create_app
from federation.extensions import build_services
from federation.jobs import service as jobs
from federation.jobs.models import Job
from library.catalog import indexing, service, tasks
from library.catalog.models import Work
from library.catalog.records import BibRecord, Item, Name
from library.catalog.store import Incoming, store_batch


async def store_one(svc) -> str:
    bib = BibRecord(
        control_number="refill-1",
        dialect="marc21",
        title="红楼梦",
        names=(Name("曹雪芹"),),
        year=1982,
        isbns=("9787020002207",),
        language="chi",
        items=(Item(barcode="REFILL-1", library="CQL", status="available"),),
    )
    async with svc.db.uow() as uow:
        await store_batch(uow.session, "CQL", [Incoming(bib)], actor="test")
        await uow.commit()
    async with svc.db.reader() as s:
        return (await s.execute(select(Work.id))).scalar_one()


async def reindex_jobs(svc) -> list[Job]:
    async with svc.db.reader() as s:
        return list((await s.execute(select(Job).where(Job.kind == tasks.REINDEX))).scalars())


async def found(svc, q: str = "红楼梦") -> list[str]:
    result = await service.search(svc, service.SearchRequest(q=q))
    return [h.id for h in result.hits]


async def test_an_empty_database_queues_nothing(svc):
    assert await tasks.rebuild_if_empty(svc) is None
    assert await reindex_jobs(svc) == []


async def test_works_beside_an_empty_index_are_rebuilt_once(svc):
    work = await store_one(svc)
    assert await found(svc) == []  # stored straight into the database, never indexed
    job = await tasks.rebuild_if_empty(svc)
    assert job is not None
    assert await tasks.rebuild_if_empty(svc) is None  # queued already: not twice
    assert [j.created_by for j in await reindex_jobs(svc)] == ["system:start"]
    assert await jobs.execute(svc, job)
    assert await found(svc) == [work]
    assert await tasks.rebuild_if_empty(svc) is None  # the index holds the work now
    assert len(await reindex_jobs(svc)) == 1


async def test_an_index_full_already_is_left_alone(svc):
    work = await store_one(svc)
    await tasks.reindex_works(svc, [work])
    assert await tasks.rebuild_if_empty(svc) is None
    assert await reindex_jobs(svc) == []


async def test_a_changed_mapping_is_rebuilt(settings, svc, monkeypatch):
    work = await store_one(svc)
    await tasks.reindex_works(svc, [work])
    assert await found(svc) == [work]
    await svc.search.close()
    # the next release of the engine stores its documents otherwise: its index starts as a new, empty version
    monkeypatch.setattr(tantivy_engine, "_MAPPING_VERSION", tantivy_engine._MAPPING_VERSION + 1)
    later = build_services(settings)
    try:
        await service.ensure_index(later)
        assert await later.search.count(indexing.INDEX) == 0
        job = await tasks.rebuild_if_empty(later)
        assert job is not None
        assert await jobs.execute(later, job)
        assert await found(later) == [work]
    finally:
        await later.close()


async def test_a_server_starting_beside_an_empty_index_refills_it(settings, svc):
    """The check runs as the server starts, and its background runner rebuilds: the work is found over HTTP."""
    work = await store_one(svc)
    server = TestServer(create_app(settings, svc=svc))
    await server.start_server(**SERVER_LIMITS)
    async with TestClient(server) as client:
        ids: list[str] = []
        for _ in range(200):
            resp = await client.get("/api/v1/catalog/search", params={"q": "hlm"})
            assert resp.status == 200, await resp.text()
            ids = [h["id"] for h in (await resp.json())["items"]]
            if ids:
                break
            await asyncio.sleep(0.05)
        assert ids == [work]
    assert [j.state for j in await reindex_jobs(svc)] == ["succeeded"]
