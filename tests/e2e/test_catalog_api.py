"""The union catalogue over HTTP: search, a work with every library's copies, export, splits, bad queries."""

from __future__ import annotations

import pymarc
from sqlalchemy import select

from library.catalog.models import BibRecordRow, Work
from library.catalog.records import BibRecord, Item, Name
from library.catalog.store import Incoming, store_batch
from library.catalog.tasks import reindex_works
from tests.conftest import token_for


def marc_of(cn: str, title: str, author: str, isbn: str) -> bytes:
    r = pymarc.Record(force_utf8=True)
    r.add_field(pymarc.Field(tag="001", data=cn))
    r.add_field(pymarc.Field(tag="020", indicators=[" ", " "], subfields=[pymarc.Subfield("a", isbn)]))
    r.add_field(pymarc.Field(tag="100", indicators=["1", " "], subfields=[pymarc.Subfield("a", author)]))
    r.add_field(pymarc.Field(tag="245", indicators=["1", "0"], subfields=[pymarc.Subfield("a", title)]))
    return r.as_marc()


async def load(svc) -> None:
    def bib(cn, title, library, items, year=1982, isbn="9787020002207", author="曹雪芹"):
        return BibRecord(
            control_number=cn,
            dialect="marc21",
            title=title,
            names=(Name(author),),
            year=year,
            isbns=(isbn,),
            language="chi",
            clc=("I242.4",),
            items=tuple(Item(barcode=b, library=library, status=s, location=f"{library}-MAIN") for b, s in items),
        )

    batches = {
        "CQL": [bib("cq-1", "红楼梦", "CQL", [("CQ001", "available"), ("CQ002", "on_loan")])],
        "SCL": [bib("sc-1", "紅樓夢", "SCL", [("SC001", "on_loan")])],
        "CDL": [
            bib(
                "cd-1",
                "Cien años de soledad",
                "CDL",
                [("CD001", "available")],
                1967,
                "9780060883287",
                "García Márquez, Gabriel",
            )
        ],
    }
    for library, bibs in batches.items():
        async with svc.db.uow() as uow:
            incoming = [Incoming(b, marc_of(b.control_number, b.title, b.names[0].name, b.isbns[0])) for b in bibs]
            await store_batch(uow.session, library, incoming, actor="test")
            await uow.commit()
    async with svc.db.reader() as s:
        await reindex_works(svc, list((await s.execute(select(Work.id))).scalars()))


async def test_search_finds_one_work_with_every_library(client, demo):
    await load(demo)
    resp = await client.get("/api/v1/catalog/search", params={"q": "紅樓夢"})
    assert resp.status == 200
    body = await resp.json()
    assert body["total"] == 1
    hit = body["items"][0]
    assert hit["libraries"] == ["CQL", "SCL"] and hit["available_at"] == ["CQL"]
    assert "<em>" in hit["highlights"]["title"][0]
    assert {f["value"]: f["count"] for f in body["facets"]["library"]} == {"CQL": 1, "SCL": 1}
    assert {f["value"] for f in body["facets"]["city"]} == {"重庆", "成都"}

    latin = await (await client.get("/api/v1/catalog/search", params={"q": "garcia marquez soledad"})).json()
    assert latin["items"][0]["title"] == "Cien años de soledad"
    by_city = await (await client.get("/api/v1/catalog/search", params={"q": "", "city": "重庆"})).json()
    assert by_city["total"] == 1


async def test_the_search_page_is_byte_for_byte_what_its_schema_writes(client, demo):
    """The page is written by orjson from plain values, not through SearchResults: it must be exactly what the
    model itself writes (keys, order, nulls, scores, escapes), so the documented schema and the answer cannot
    drift apart."""
    from library.catalog.api import SearchResults

    await load(demo)
    odd = BibRecord(
        control_number="cq-odd",
        dialect="marc21",
        title='Tea & "Silk" <Road>\u2028\ttales \U0001f375',
        names=(Name("O'Brien, Seán"),),
        year=None,
        isbns=(),
        language="eng",
        items=(Item(barcode="CQ009", library="CQL", status="available"),),
    )
    async with demo.db.uow() as uow:
        incoming = [Incoming(odd, marc_of("cq-odd", "Tea", "O'Brien", "9780306406157"))]
        await store_batch(uow.session, "CQL", incoming, actor="test")
        await uow.commit()
    async with demo.db.reader() as s:
        await reindex_works(demo, list((await s.execute(select(Work.id))).scalars()))
    seen = set()
    for params in (
        {"q": "紅樓夢"},
        {"q": "garcia marquez soledad"},
        {"q": "tea silk road tales"},
        {"q": "", "city": "重庆", "sort": "year_desc"},
        {"q": "nothing-matches-this"},
    ):
        resp = await client.get("/api/v1/catalog/search", params=params)
        assert resp.status == 200, await resp.text()
        assert (resp.content_type, resp.charset) == ("application/json", "utf-8")
        body = await resp.read()
        page = SearchResults.model_validate_json(body)
        assert body == page.model_dump_json(by_alias=True).encode(), params
        seen.update(h.title for h in page.items)
    # the comparison covered highlights with escapes, a work without a year, and an empty page
    assert {"红楼梦", "Cien años de soledad", odd.title} <= seen


async def test_work_shows_each_copy_and_its_status(client, demo):
    await load(demo)
    hit = (await (await client.get("/api/v1/catalog/search", params={"q": "hlm"})).json())["items"][0]
    work = await (await client.get(f"/api/v1/catalog/works/{hit['id']}")).json()
    assert [h["library"] for h in work["holdings"]] == ["CQL", "SCL"]
    cql = work["holdings"][0]
    assert {i["barcode"]: i["status"] for i in cql["items"]} == {"CQ001": "available", "CQ002": "on_loan"}
    assert cql["available"] == 1
    assert (await client.get("/api/v1/catalog/works/nope")).status == 404


async def test_export_marcxml_and_marc21(client, demo):
    await load(demo)
    async with demo.db.reader() as s:
        rid = (await s.execute(select(BibRecordRow.id).where(BibRecordRow.library == "CDL"))).scalar_one()
    xml = await client.get(f"/api/v1/catalog/records/{rid}/export")
    assert xml.status == 200
    records = pymarc.parse_xml_to_array(__import__("io").BytesIO(await xml.read()))
    assert records[0]["245"]["a"] == "Cien años de soledad"
    raw = await client.get(f"/api/v1/catalog/records/{rid}/export", params={"format": "marc21"})
    record = next(pymarc.MARCReader(await raw.read(), to_unicode=True, force_utf8=True))
    assert record["100"]["a"] == "García Márquez, Gabriel"


async def test_split_by_an_administrator(client, demo):
    await load(demo)
    headers = await token_for(client, "admin@federation")
    async with demo.db.reader() as s:
        rid = (await s.execute(select(BibRecordRow.id).where(BibRecordRow.library == "SCL"))).scalar_one()
    resp = await client.post(
        f"/api/v1/catalog/records/{rid}/split", json={"reason": "another edition"}, headers=headers
    )
    assert resp.status == 201, await resp.text()
    work = await resp.json()
    assert [h["library"] for h in work["holdings"]] == ["SCL"]
    log = await client.get(f"/api/v1/catalog/works/{work['id']}/cluster-log", headers=headers)
    assert [e["action"] for e in (await log.json())["items"]] == ["split"]
    lib_headers = await token_for(client, "librarian@CQL")
    assert (
        await client.post(f"/api/v1/catalog/records/{rid}/split", json={"reason": "x"}, headers=lib_headers)
    ).status == 403


async def test_queries_never_500(client, demo):
    await load(demo)
    for q in ("x" * 10_000, "((((", '"""', ":::", "title:", "AND OR NOT", "year:abc", "isbn:123", "\x00", "🙂"):
        resp = await client.get("/api/v1/catalog/search", params={"q": q})
        assert resp.status in (200, 400), (q[:20], resp.status)
        if resp.status == 400:
            assert (await resp.json())["code"] in ("catalog.bad_query", "validation_failed")
    assert (await client.get("/api/v1/catalog/search", params={"page_size": "1000"})).status == 422


async def test_a_client_asks_for_the_facets_it_shows(client, demo):
    await load(demo)
    every = await (await client.get("/api/v1/catalog/search", params={"q": "红楼梦"})).json()
    assert list(every["facets"]) == ["library", "city", "language", "format", "clc_class", "year", "available"]
    two = await client.get("/api/v1/catalog/search", params=[("q", "红楼梦"), ("facet", "library"), ("facet", "city")])
    assert two.status == 200
    body = await two.json()
    assert list(body["facets"]) == ["library", "city"]
    assert body["facets"]["library"] == every["facets"]["library"]
    assert body["items"] == every["items"] and body["total"] == every["total"]
    repeated = [("q", "红楼梦"), ("facet", "year"), ("facet", "year")]
    assert list((await (await client.get("/api/v1/catalog/search", params=repeated)).json())["facets"]) == ["year"]
    unknown = await client.get("/api/v1/catalog/search", params=[("q", "x"), ("facet", "colour")])
    assert unknown.status == 422
    assert (await unknown.json())["code"] == "validation_failed"
