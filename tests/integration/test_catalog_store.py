"""Storing records: clusters across libraries, idempotent reloads, newer versions, splits that stay split."""

from __future__ import annotations

import dataclasses

from sqlalchemy import func, select

from library.catalog.models import BibRecordRow, ItemRow, Work
from library.catalog.records import BibRecord, Item, Name
from library.catalog.store import Incoming, store_batch
from library.catalog.tasks import reindex_works


def bib(cn: str, title: str, *, isbns=(), author="曹雪芹", year=1982, version=None, items=(), library="CQL"):
    return BibRecord(
        control_number=cn,
        dialect="marc21",
        title=title,
        names=(Name(author),) if author else (),
        year=year,
        isbns=tuple(isbns),
        language="chi",
        version=version,
        items=tuple(Item(barcode=b, library=library, status=s) for b, s in items),
    )


async def store(svc, library, *bibs):
    async with svc.db.uow() as uow:
        result = await store_batch(uow.session, library, [Incoming(b) for b in bibs], actor="test")
        await uow.commit()
    return result


async def work_of(svc, library, cn):
    async with svc.db.reader() as s:
        return (
            await s.execute(
                select(BibRecordRow.work_id).where(BibRecordRow.library == library, BibRecordRow.control_number == cn)
            )
        ).scalar_one()


async def count(svc, model):
    async with svc.db.reader() as s:
        return (await s.execute(select(func.count()).select_from(model))).scalar_one()


async def test_same_isbn_in_two_libraries_is_one_work(svc):
    await store(svc, "CQL", bib("cq1", "红楼梦", isbns=["9787020002207"]))
    await store(svc, "SCL", bib("sc9", "红楼梦 (校注本)", isbns=["9787020002207"], year=1996))
    assert await work_of(svc, "CQL", "cq1") == await work_of(svc, "SCL", "sc9")
    assert await count(svc, Work) == 1


async def test_title_author_year_key_clusters_traditional_and_simplified(svc):
    await store(svc, "CQL", bib("a", "红楼梦"))
    await store(svc, "CDL", bib("b", "紅樓夢"))
    await store(svc, "SCL", bib("c", "红楼梦", year=1990))
    assert await work_of(svc, "CQL", "a") == await work_of(svc, "CDL", "b")
    assert await work_of(svc, "SCL", "c") != await work_of(svc, "CQL", "a")


async def test_reload_changes_nothing_and_newer_versions_replace(svc):
    first = await store(svc, "CQL", bib("a", "三体", author="刘慈欣", version="20200101000000.0"))
    assert (first.added, first.unchanged) == (1, 0)
    again = await store(svc, "CQL", bib("a", "三体", author="刘慈欣", version="20200101000000.0"))
    assert (again.added, again.updated, again.unchanged, again.works) == (0, 0, 1, set())
    older = await store(svc, "CQL", bib("a", "三体 (旧)", author="刘慈欣", version="20190101000000.0"))
    assert older.unchanged == 1
    newer = await store(svc, "CQL", bib("a", "三体 I", author="刘慈欣", version="20210101000000.0"))
    assert newer.updated == 1
    async with svc.db.reader() as s:
        row = (await s.execute(select(BibRecordRow))).scalar_one()
    assert row.data["title"] == "三体 I"
    assert await count(svc, BibRecordRow) == 1


async def test_items_keep_their_circulation_status_and_vanish_when_dropped(svc):
    await store(svc, "CQL", bib("a", "三体", items=[("B1", "available"), ("B2", "available")]))
    async with svc.db.uow() as uow:
        item = (await uow.session.execute(select(ItemRow).where(ItemRow.barcode == "B1"))).scalar_one()
        item.status = "on_loan"
        await uow.commit()
    await store(svc, "CQL", bib("a", "三体 新版", items=[("B1", "available")], version="2"))
    async with svc.db.reader() as s:
        items = {i.barcode: i.status for i in (await s.execute(select(ItemRow))).scalars()}
    assert items == {"B1": "on_loan"}


async def test_a_split_stays_split_on_reload(svc):
    from library.catalog.clusters import split

    await store(svc, "CQL", bib("a", "红楼梦", isbns=["9787020002207"]))
    await store(svc, "SCL", bib("b", "红楼梦", isbns=["9787020002207"]))
    async with svc.db.reader() as s:
        rid = (await s.execute(select(BibRecordRow.id).where(BibRecordRow.library == "SCL"))).scalar_one()
    async with svc.db.uow() as uow:
        old, new = await split(uow.session, rid, "admin", "different edition")
        await uow.commit()
    assert await work_of(svc, "SCL", "b") == new != old
    await store(svc, "SCL", bib("b", "红楼梦 (重印)", isbns=["9787020002207"], version="9"))
    assert await work_of(svc, "SCL", "b") == new
    await store(svc, "CDL", bib("c", "红楼梦", isbns=["9787020002207"]))
    assert await work_of(svc, "CDL", "c") == old


async def test_duplicate_control_numbers_in_one_batch_keep_the_last(svc):
    result = await store(svc, "CQL", bib("a", "one"), bib("a", "two"))
    assert result.added == 1
    async with svc.db.reader() as s:
        assert (await s.execute(select(BibRecordRow.data))).scalar_one()["title"] == "two"


async def test_search_documents_follow_the_store(svc):
    from library.catalog import service

    await store(svc, "CQL", bib("a", "红楼梦", isbns=["9787020002207"], items=[("C1", "available")]))
    await store(svc, "SCL", bib("b", "紅樓夢", isbns=["9787020002207"], items=[("S1", "on_loan")], library="SCL"))
    await store(svc, "CQL", bib("x", "红楼梦研究", author="俞平伯", year=1952))
    async with svc.db.reader() as s:
        work_ids = list((await s.execute(select(Work.id))).scalars())
    await service.ensure_index(svc)
    await reindex_works(svc, work_ids)
    for q in ("红楼梦", "紅樓夢", "hlm", "honglou", "楼梦", "702000220X", "7-02-000220-x", "978-7-02-000220-7"):
        result = await service.search(svc, service.SearchRequest(q=q))
        assert result.hits, q
        top = service.hit_view(result.hits[0])
        assert top["title"] in ("红楼梦", "紅樓夢"), q
        assert sorted(top["libraries"]) == ["CQL", "SCL"], q
        assert top["available_at"] == ["CQL"], q
    only_available = await service.search(svc, service.SearchRequest(q="红楼梦", available=True, libraries=("SCL",)))
    assert only_available.total == 0
    facets = (await service.search(svc, service.SearchRequest(q="红楼梦"))).facets
    assert dict(facets["library"]) == {"CQL": 2, "SCL": 1}


def _replace(b: BibRecord, **kw) -> BibRecord:
    return dataclasses.replace(b, **kw)
