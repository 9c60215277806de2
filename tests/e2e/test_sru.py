"""SRU 1.2 over HTTP (explain, searchRetrieve, every diagnostic) and the CQL parser on its own."""

from __future__ import annotations

import dataclasses
import io
import xml.etree.ElementTree as ET

import pymarc
import pytest
from sqlalchemy import update

from federation.members import service as members
from federation.services import Services
from library.catalog import marc, tasks
from library.catalog import service as catalog
from library.catalog.mapping import to_bib
from library.catalog.models import BibRecordRow
from library.catalog.sru import Diagnostic, parse_cql
from library.catalog.store import Incoming, store_batch
from search.query import And, Exact, MatchAll, Not, Or, Phrase, Range, Term
from tests.fixtures import marc_corpus as mc

SRW = "http://www.loc.gov/zing/srw/"
DIAG = "http://www.loc.gov/zing/srw/diagnostic/"
ZR = "http://explain.z3950.org/dtd/2.0/"
MARC = "http://www.loc.gov/MARC21/slim"
DC = "http://purl.org/dc/elements/1.1/"
SRW_DC = "info:srw/schema/1/dc-schema"
NS = {"s": SRW, "d": DIAG, "zr": ZR, "marc": MARC, "dc": DC, "srw_dc": SRW_DC}
MARCXML = "info:srw/schema/1/marcxml-v1.1"
DCXML = "info:srw/schema/1/dc-v1.1"
GENERATED = 25


def generated_book(n: int) -> mc.Book:
    return mc.Book(
        control_number=f"GEN{n:04d}",
        title=f"Harvest volume {n}",
        responsibility="by Ann Example",
        author="Example, Ann",
        isbns=(),
        place="Chongqing",
        publisher="Example Press",
        year=1990 + n,
        clc="I247",
        language="eng",
        subject=("Harvesting",),
    )


def incoming(data: bytes, library: str) -> list[Incoming]:
    out = []
    for entry in marc.read(data, library=library):
        assert isinstance(entry, marc.RawRecord), entry
        out.append(Incoming(to_bib(entry, library=library), entry.record.as_marc()))
    return out


def deleted_spec() -> mc.MarcSpec:
    book = dataclasses.replace(mc.SANTI, control_number="DEL0001", title="删除了的红楼梦续书", isbns=())
    spec = mc.marc21_spec(book, holdings=False)
    return dataclasses.replace(spec, leader=spec.leader[:5] + "d" + spec.leader[6:])


CATALOGUE = {
    "CQL": lambda: b"".join(
        mc.iso2709(s)
        for s in [mc.marc21_spec(mc.HONGLOUMENG, holdings=False)]
        + [mc.marc21_spec(generated_book(n), holdings=False) for n in range(GENERATED)]
    ),
    # 红楼梦 again (clusters with CQL's by ISBN), 三体 and 刘䶮与南汉 only here, in UNIMARC
    "SCL": lambda: b"".join(mc.iso2709(mc.unimarc_spec(b)) for b in (mc.HONGLOUMENG, mc.SANTI, mc.LIU_YAN)),
    "CDL": lambda: b"".join(
        mc.iso2709(s) for s in (mc.marc21_spec(mc.CIEN_ANOS, holdings=False), mc.xiyouji_spec(), deleted_spec())
    ),
}


@pytest.fixture
async def catalogue(svc: Services) -> Services:
    works: set[str] = set()
    async with svc.db.uow() as uow:
        for code, name in (("CQL", "重庆图书馆"), ("SCL", "四川省图书馆"), ("CDL", "成都图书馆")):
            await members.upsert(uow, members.NewInstitution(code, name, "library", city="成都"))
        for library, data in CATALOGUE.items():
            works |= (await store_batch(uow.session, library, incoming(data(), library), actor="test")).works
        await uow.commit()
    await catalog.ensure_index(svc)
    await tasks.reindex_works(svc, sorted(works))
    return svc


# --------------------------------------------------------------------------- helpers


async def sru(client, **params: str) -> ET.Element:
    resp = await client.get("/sru", params=params)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/xml" and resp.charset == "utf-8"
    body = await resp.read()
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(body)


async def search(client, query: str, **params: str) -> ET.Element:
    root = await sru(client, operation="searchRetrieve", version="1.2", query=query, **params)
    check_search_response(root)
    return root


def check_search_response(root: ET.Element) -> None:
    """Element order of srw:searchRetrieveResponse and srw:record (SRU 1.2 schema)."""
    assert root.tag == f"{{{SRW}}}searchRetrieveResponse"
    order = ["version", "numberOfRecords", "records", "nextRecordPosition", "diagnostics"]
    tags = [c.tag.removeprefix(f"{{{SRW}}}") for c in root]
    assert tags[:2] == ["version", "numberOfRecords"]
    assert tags == sorted(tags, key=order.index), tags
    assert root.findtext("s:version", namespaces=NS) == "1.2"
    for rec in root.findall("s:records/s:record", NS):
        parts = [c.tag.removeprefix(f"{{{SRW}}}") for c in rec]
        assert parts == ["recordSchema", "recordPacking", "recordData", "recordPosition"], parts


def total(root: ET.Element) -> int:
    return int(root.findtext("s:numberOfRecords", namespaces=NS))


def diagnostics(root: ET.Element) -> list[tuple[str, str | None]]:
    return [
        (d.findtext("d:uri", namespaces=NS), d.findtext("d:details", namespaces=NS))
        for d in root.findall("s:diagnostics/d:diagnostic", NS)
    ]


def diag_codes(root: ET.Element) -> list[int]:
    return [int(uri.rsplit("/", 1)[1]) for uri, _ in diagnostics(root)]


def marc_records(root: ET.Element) -> list[pymarc.Record]:
    out = []
    for data in root.findall("s:records/s:record/s:recordData", NS):
        (el,) = list(data)
        (rec,) = pymarc.parse_xml_to_array(io.BytesIO(ET.tostring(el)))
        out.append(rec)
    return out


def dc_titles(root: ET.Element) -> list[str]:
    return [
        data.find("srw_dc:dc", NS).findtext("dc:title", namespaces=NS)
        for data in root.findall("s:records/s:record/s:recordData", NS)
    ]


# --------------------------------------------------------------------------- explain


@pytest.mark.parametrize("params", [{}, {"operation": "explain"}, {"operation": "explain", "version": "1.2"}])
async def test_explain(client, params):
    root = await sru(client, **params)
    assert root.tag == f"{{{SRW}}}explainResponse"
    assert [c.tag.removeprefix(f"{{{SRW}}}") for c in root] == ["version", "record"]
    rec = root.find("s:record", NS)
    assert rec.findtext("s:recordSchema", namespaces=NS) == "http://explain.z3950.org/dtd/2.0/"
    explain = rec.find("s:recordData/zr:explain", NS)
    assert [c.tag.removeprefix(f"{{{ZR}}}") for c in explain] == [
        "serverInfo",
        "databaseInfo",
        "indexInfo",
        "schemaInfo",
        "configInfo",
    ]
    server = explain.find("zr:serverInfo", NS)
    assert server.get("protocol") == "SRU" and server.get("version") == "1.2"
    assert server.findtext("zr:database", namespaces=NS) == "sru"
    assert int(server.findtext("zr:port", namespaces=NS)) == client.port
    indexes = {f"{n.get('set')}.{n.text}" for n in explain.findall("zr:indexInfo/zr:index/zr:map/zr:name", NS)}
    assert {
        "cql.serverChoice",
        "dc.title",
        "dc.creator",
        "dc.subject",
        "dc.publisher",
        "dc.date",
        "bath.isbn",
    } <= indexes
    schemas = {s.get("name"): s.get("identifier") for s in explain.findall("zr:schemaInfo/zr:schema", NS)}
    assert schemas == {"marcxml": MARCXML, "dc": DCXML}
    assert explain.find("zr:configInfo/zr:setting[@type='maximumRecords']", NS).text == "100"


async def test_explain_with_an_unsupported_version(client):
    root = await sru(client, operation="explain", version="2.0")
    assert root.tag == f"{{{SRW}}}explainResponse"
    assert diagnostics(root) == [("info:srw/diagnostic/1/5", "1.2")]


# --------------------------------------------------------------------------- searchRetrieve


async def test_search_free_text_chinese(client, catalogue):
    root = await search(client, "红楼梦")
    assert total(root) == 1, "CQL's and SCL's records are one work"
    (rec,) = marc_records(root)
    assert rec["245"]["a"] == "红楼梦 /", "the MARC21 record represents the work"
    assert rec["001"].data == "TC0000001"
    assert root.findtext("s:records/s:record/s:recordSchema", namespaces=NS) == MARCXML
    assert root.findtext("s:records/s:record/s:recordPosition", namespaces=NS) == "1"
    assert root.find("s:nextRecordPosition", NS) is None


async def test_search_indexes(client, catalogue):
    for query in (
        "dc.title=红楼梦",
        "DC.Title = 红楼梦",
        'dc.title="红楼梦"',
        "title=红楼梦",
        "cql.serverChoice=红楼梦",
        "cql.anywhere = 红楼梦",
        "dc.creator=曹雪芹",
        "dc.creator any 曹雪芹",
        "dc.subject=章回小说",
        "dc.publisher=人民文学出版社 and dc.subject=清代",
        "bath.isbn=702000220X",
        "bath.isbn = 7-02-000220-X",
        "bath.isbn==9787020002207",
        "9787020002207",
        "dc.date=1982 and dc.creator=曹雪芹",
    ):
        root = await search(client, query, recordSchema="dc")
        assert (total(root), dc_titles(root)) == (1, ["红楼梦"]), query
    assert total(await search(client, "dc.creator=刘慈欣")) == 1
    root = await search(client, "dc.publisher=人民文学出版社", recordSchema="dc")
    assert sorted(dc_titles(root)) == ["红楼梦", "西游记"], "西游记's publisher is in its 880"
    assert total(await search(client, "dc.title=三体 and dc.creator=曹雪芹")) == 0


async def test_isbn_with_a_wrong_check_digit(client, catalogue):
    # 7020002207 is not the ISBN-10 of 9787020002207 (that is 702000220X): the check digit is wrong
    root = await search(client, "bath.isbn=7020002207")
    assert diag_codes(root) == [36]
    assert total(await search(client, "7020002207")) == 0, "as free text it is just a word nobody has"


async def test_booleans(client, catalogue):
    assert total(await search(client, "dc.title=红楼梦 or dc.title=三体")) == 2
    assert total(await search(client, "dc.title=红楼梦 and dc.creator=曹雪芹")) == 1
    assert total(await search(client, "dc.title=红楼梦 not dc.creator=曹雪芹")) == 0
    assert total(await search(client, 'dc.publisher="Example Press"')) == GENERATED
    assert total(await search(client, 'dc.publisher="Example Press" not dc.date=1990')) == GENERATED - 1
    assert total(await search(client, 'dc.publisher="Example Press" NOT (dc.date<1995 or dc.date>2010)')) == 16
    assert total(await search(client, "(dc.title=红楼梦 or dc.title=三体) and dc.creator=刘慈欣")) == 1
    # left to right, equal precedence: (a or b) and c
    assert total(await search(client, "dc.title=红楼梦 or dc.title=三体 and dc.creator=刘慈欣")) == 1
    assert total(await search(client, "dc.title=红楼梦 or (dc.title=三体 and dc.creator=刘慈欣)")) == 2
    assert total(await search(client, 'dc.date within "1990 1994"')) == 5
    assert total(await search(client, "dc.date >= 2019")) == 1  # 刘䶮与南汉; the generated run to 2014
    assert total(await search(client, "cql.allRecords=1")) == GENERATED + 5, "the deleted record's work is gone"


async def test_phrases(client, catalogue):
    assert total(await search(client, 'dc.title adj "harvest volume 7"')) == 1
    assert total(await search(client, 'dc.title="volume 7"')) == 1, "= with several words is a phrase (CQL 1.2)"
    assert total(await search(client, 'dc.title adj "volume harvest"')) == 0
    assert total(await search(client, 'dc.title all "volume harvest"')) == GENERATED
    assert total(await search(client, 'dc.title any "红楼梦 三体"')) == 2
    assert total(await search(client, 'dc.title all "红楼梦 三体"')) == 0
    assert total(await search(client, '"Cien años"')) == 1


async def test_paging(client, catalogue):
    seen: list[str] = []
    start = 1
    pages = 0
    while start:
        root = await search(client, 'dc.publisher="Example Press"', maximumRecords="10", startRecord=str(start))
        assert total(root) == GENERATED
        positions = [int(p.text) for p in root.iter(f"{{{SRW}}}recordPosition")]
        assert positions == list(range(start, start + len(positions)))
        seen += [r["001"].data for r in marc_records(root)]
        nxt = root.findtext("s:nextRecordPosition", namespaces=NS)
        start = int(nxt) if nxt else 0
        pages += 1
    assert pages == 3
    assert sorted(seen) == [f"GEN{n:04d}" for n in range(GENERATED)]
    root = await search(client, 'dc.publisher="Example Press"')
    assert len(root.findall("s:records/s:record", NS)) == 10, "ten records unless asked"
    root = await search(client, 'dc.publisher="Example Press"', maximumRecords="1000")
    assert len(root.findall("s:records/s:record", NS)) == GENERATED
    root = await search(client, 'dc.publisher="Example Press"', maximumRecords="0")
    assert total(root) == GENERATED and root.find("s:records", NS) is None
    root = await search(client, 'dc.publisher="Example Press"', startRecord=str(GENERATED))
    assert len(root.findall("s:records/s:record", NS)) == 1 and root.find("s:nextRecordPosition", NS) is None


async def test_record_schemas(client, catalogue):
    for schema in ("marcxml", MARCXML):
        root = await search(client, "dc.title=Cien", recordSchema=schema)
        assert root.findtext("s:records/s:record/s:recordSchema", namespaces=NS) == MARCXML
        assert marc_records(root)[0]["245"]["a"] == "Cien años de soledad /"
    for schema in ("dc", DCXML):
        root = await search(client, "dc.title=Cien", recordSchema=schema)
        assert root.findtext("s:records/s:record/s:recordSchema", namespaces=NS) == DCXML
        dc = root.find("s:records/s:record/s:recordData/srw_dc:dc", NS)
        assert dc.findtext("dc:title", namespaces=NS) == "Cien años de soledad"
        assert dc.findtext("dc:creator", namespaces=NS) == "García Márquez, Gabriel"
        assert dc.findtext("dc:identifier", namespaces=NS) == "urn:isbn:9788437604947"
        assert dc.findtext("dc:language", namespaces=NS) == "spa"
    # a work held only in UNIMARC is still given, and in Chinese
    root = await search(client, "dc.title=三体", recordSchema="dc")
    assert dc_titles(root) == ["三体"]


async def test_record_packing_string(client, catalogue):
    root = await search(client, "dc.title=红楼梦", recordPacking="string", recordSchema="dc")
    data = root.find("s:records/s:record/s:recordData", NS)
    assert len(data) == 0
    dc = ET.fromstring(data.text)
    assert dc.tag == f"{{{SRW_DC}}}dc"
    assert dc.findtext("dc:title", namespaces=NS) == "红楼梦"


async def test_deleted_records_are_not_found(client, catalogue):
    assert total(await search(client, "dc.title=删除了的红楼梦续书")) == 0


async def test_surrogate_diagnostic_when_no_marc_is_stored(client, catalogue):
    async with catalogue.db.uow() as uow:
        await uow.session.execute(update(BibRecordRow).where(BibRecordRow.library == "CDL").values(marc=None))
        await uow.commit()
    root = await search(client, "dc.title=Cien")
    rec = root.find("s:records/s:record", NS)
    assert rec.findtext("s:recordSchema", namespaces=NS) == "info:srw/schema/1/diagnostics-v1.1"
    assert rec.findtext("s:recordData/d:diagnostic/d:uri", namespaces=NS) == "info:srw/diagnostic/1/67"
    root = await search(client, "dc.title=Cien", recordSchema="dc")
    assert dc_titles(root) == ["Cien años de soledad"]


# --------------------------------------------------------------------------- diagnostics


DIAGNOSTICS = [
    ({"query": "dc.title="}, 10),
    ({"query": "(红楼梦"}, 10),
    ({"query": "红楼梦)"}, 10),
    ({"query": '"红楼梦'}, 10),
    ({"query": "dc.title = 红楼梦 and"}, 10),
    ({"query": "and 红楼梦"}, 10),
    ({"query": "红楼梦 曹雪芹"}, 10),
    ({"query": "(" * 40 + "x" + ")" * 40}, 10),
    ({"query": "dc.foo=红楼梦"}, 16),
    ({"query": "foo=红楼梦"}, 16),
    ({"query": "bath.issn=1234-5678"}, 16),
    ({"query": "rec.id=1"}, 15),
    ({"query": "dc.title <> 红楼梦"}, 19),
    ({"query": "dc.title within 红楼梦"}, 22),
    ({"query": "dc.title encloses 红楼梦"}, 19),
    ({"query": "dc.title near 红楼梦"}, 19),
    ({"query": "dc.title =/stem 红楼梦"}, 20),
    ({"query": 'dc.title=""'}, 27),
    ({"query": "dc.title=hong*"}, 28),
    ({"query": "dc.title=^hong"}, 31),
    ({"query": "dc.date=nineteen"}, 36),
    ({"query": "红楼梦 prox 曹雪芹"}, 37),
    ({"query": "红楼梦 and/foo 曹雪芹"}, 46),
    ({"query": " or ".join(["a"] * 70)}, 38),
    ({"query": "红楼梦 sortby dc.date"}, 80),
    ({"query": "红楼梦", "startRecord": "1000"}, 61),
    ({"query": "红楼梦", "recordSchema": "mods"}, 66),
    ({"query": "红楼梦", "recordPacking": "json"}, 71),
    ({"query": "红楼梦", "recordXPath": "/a"}, 72),
    ({"query": "红楼梦", "sortKeys": "title"}, 80),
    ({"query": "红楼梦", "stylesheet": "x.xsl"}, 110),
    ({}, 7),
    ({"query": "  "}, 7),
    ({"query": "红楼梦", "startRecord": "0"}, 6),
    ({"query": "红楼梦", "startRecord": "abc"}, 6),
    ({"query": "红楼梦", "maximumRecords": "-1"}, 6),
    ({"query": "红楼梦", "maximumRecords": "ten"}, 6),
    ({"query": "红楼梦", "version": "2.0"}, 5),
    ({"query": "红楼梦", "version": "1.3"}, 5),
    ({"query": "红楼梦", "frobnicate": "1"}, 8),
]


@pytest.mark.parametrize(("params", "code"), DIAGNOSTICS)
async def test_diagnostics(client, catalogue, params, code):
    params = {"operation": "searchRetrieve", "version": "1.2", **params}
    root = await sru(client, **params)
    check_search_response(root)
    assert diag_codes(root) == [code], diagnostics(root)
    assert root.find("s:records", NS) is None
    uri, _ = diagnostics(root)[0]
    assert uri == f"info:srw/diagnostic/1/{code}"
    message = root.findtext("s:diagnostics/d:diagnostic/d:message", namespaces=NS)
    assert message


async def test_first_record_position_with_hits(client, catalogue):
    root = await search(client, "红楼梦", startRecord="2")
    assert diag_codes(root) == [61]
    assert total(root) == 1
    root = await search(client, "nothingmatchesthis", startRecord="5")
    assert diag_codes(root) == [] and total(root) == 0


async def test_engine_failure_is_a_general_system_error(client, catalogue, monkeypatch):
    async def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(catalogue.search, "search", broken)
    resp = await client.get("/sru", params={"operation": "searchRetrieve", "version": "1.2", "query": "红楼梦"})
    assert resp.status == 200 and resp.content_type == "text/xml"
    root = ET.fromstring(await resp.read())
    assert diag_codes(root) == [1]
    assert "disk on fire" not in await resp.text()


async def test_unsupported_operation(client):
    root = await sru(client, operation="scan", version="1.2", scanClause="dc.title=a")
    assert diag_codes(root) == [8, 4]


async def test_extension_parameters_are_ignored(client, catalogue):
    root = await search(client, "红楼梦", **{"x-debug": "1"})
    assert total(root) == 1 and not diagnostics(root)


async def test_version_1_1_is_answered(client, catalogue):
    root = await sru(client, operation="searchRetrieve", version="1.1", query="红楼梦")
    assert root.findtext("s:version", namespaces=NS) == "1.1" and total(root) == 1


async def test_no_problem_json_ever(client, catalogue):
    for query in ("\x00", "\ufffe", ")" * 5000, '"' + "\\" * 3, "a" * 5000):
        resp = await client.get("/sru", params={"operation": "searchRetrieve", "version": "1.2", "query": query})
        assert resp.status == 200 and resp.content_type == "text/xml"
        ET.fromstring(await resp.read())


# --------------------------------------------------------------------------- the CQL parser


@pytest.mark.parametrize(
    ("query", "tree"),
    [
        ("红楼梦", Term("红楼梦")),
        ('"红楼梦"', Term("红楼梦")),
        ('"red chamber"', Phrase("red chamber")),
        ("cql.serverChoice = 红楼梦", Term("红楼梦")),
        ("dc.title = 红楼梦", Term("红楼梦", "title")),
        ("DC.TITLE=红楼梦", Term("红楼梦", "title")),
        ("dc.creator exact 曹雪芹", Phrase("曹雪芹", "author")),
        ("dc.subject==小说", Phrase("小说", "subject")),
        ('dc.title adj "red  chamber"', Phrase("red chamber", "title")),
        ('dc.title all "red chamber"', And((Term("red", "title"), Term("chamber", "title")))),
        ('dc.title any "red chamber"', Or((Term("red", "title"), Term("chamber", "title")))),
        ("dc.publisher=中华书局", Term("中华书局", "publisher")),
        ("bath.isbn=702000220X", Exact("isbn", "9787020002207")),
        (
            'bath.isbn any "702000220X 9788437604947"',
            Or((Exact("isbn", "9787020002207"), Exact("isbn", "9788437604947"))),
        ),
        ("dc.date=1982", Range("year", 1982, 1982)),
        ("dc.date<1982", Range("year", None, 1981)),
        ("dc.date <= 1982", Range("year", None, 1982)),
        ("dc.date>1982", Range("year", 1983, None)),
        ("dc.date>=1982", Range("year", 1982, None)),
        ('dc.date within "1990 1980"', Range("year", 1980, 1990)),
        ("cql.allRecords = 1", MatchAll()),
        ("9787020002207", Or((Exact("isbn", "9787020002207"), Term("9787020002207")))),
        ("a and b and c", And((Term("a"), Term("b"), Term("c")))),
        ("a or b or c", Or((Term("a"), Term("b"), Term("c")))),
        ("a and b or c", Or((And((Term("a"), Term("b"))), Term("c")))),
        ("a or b and c", And((Or((Term("a"), Term("b"))), Term("c")))),
        ("a or (b and c)", Or((Term("a"), And((Term("b"), Term("c")))))),
        ("a not b", And((Term("a"), Not(Term("b"))))),
        ("a AND b NOT c", And((Term("a"), Term("b"), Not(Term("c"))))),
        ("((a))", Term("a")),
        ('"and"', Term("and")),
        ("dc.title = and", Term("and", "title")),
        (r'"say \"hi\""', Phrase('say "hi"')),
        (r"dc.title=hong\*", Term("hong*", "title")),
        ('> dc = "info:srw/cql-context-set/1/dc-v1.1" dc.title = x', Term("x", "title")),
        ('> "info:srw/cql-context-set/1/dc-v1.1" title = x', Term("x", "title")),
        ('> d = "info:srw/cql-context-set/1/dc-v1.1" d.creator = x', Term("x", "author")),
    ],
)
def test_cql_trees(query, tree):
    assert parse_cql(query) == tree


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("", 10),
        ("(", 10),
        (")", 10),
        ("a and", 10),
        ("a b", 10),
        ("dc.title any", 10),
        ('"open', 10),
        ("a prox b", 37),
        ("a prox/unit=word b", 46),
        ("dc.nope = x", 16),
        ("nope.title = x", 15),
        ('> x = "urn:unknown" x.title = y', 15),
        ("dc.title <> x", 19),
        ("dc.title < x", 22),
        ("bath.isbn all x", 36),
        ("bath.isbn < 702000220X", 22),
        ("dc.date any x", 36),
        ('dc.date within "1990"', 36),
        ("dc.title=a?c", 28),
        ("x sortby dc.title", 80),
    ],
)
def test_cql_diagnostics(query, code):
    with pytest.raises(Diagnostic) as e:
        parse_cql(query)
    assert e.value.code == code
