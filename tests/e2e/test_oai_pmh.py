"""OAI-PMH 2.0 over HTTP: every verb, every error code, resumption to the end, and a standard harvester.

The catalogue: three member libraries, Chinese and Latin records in MARC21 and UNIMARC, one deleted
record, and 120 generated records so lists are split (pages of 100).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable

import pymarc
import pytest
from sqlalchemy import update

from federation.members import service as members
from federation.services import Services
from library.catalog import marc
from library.catalog.mapping import to_bib
from library.catalog.models import BibRecordRow
from library.catalog.store import Incoming, store_batch
from tests.conftest import make_settings
from tests.fixtures import marc_corpus as mc
from tests.live_server import LiveServer

OAI = "http://www.openarchives.org/OAI/2.0/"
OAI_DC = "http://www.openarchives.org/OAI/2.0/oai_dc/"
DC = "http://purl.org/dc/elements/1.1/"
MARC = "http://www.loc.gov/MARC21/slim"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
NS = {"o": OAI, "oai_dc": OAI_DC, "dc": DC, "marc": MARC}
GENERATED = 120

LIBRARIES = [("CQL", "重庆图书馆"), ("SCL", "四川省图书馆"), ("CDL", "成都图书馆")]
OLD = dt.datetime(2021, 6, 1, 12, 0, 0, tzinfo=dt.UTC)  # CDL's records
MIDDLE = dt.datetime(2022, 3, 15, 8, 30, 0, tzinfo=dt.UTC)  # SCL's records


def generated_book(n: int) -> mc.Book:
    return mc.Book(
        control_number=f"GEN{n:04d}",
        title=f"Harvest volume {n}",
        responsibility="by Ann Example",
        author="Example, Ann",
        isbns=(),
        place="Chongqing",
        publisher="Example Press",
        year=1990 + n % 30,
        clc="I247",
        language="eng",
        subject=("Harvesting",),
    )


def deleted_spec() -> mc.MarcSpec:
    book = dataclasses.replace(mc.SANTI, control_number="DEL0001", title="已删除的书", isbns=())
    spec = mc.marc21_spec(book, holdings=False)
    return dataclasses.replace(spec, leader=spec.leader[:5] + "d" + spec.leader[6:])


def incoming(data: bytes, library: str) -> list[Incoming]:
    out = []
    for entry in marc.read(data, library=library):
        assert isinstance(entry, marc.RawRecord), entry
        out.append(Incoming(to_bib(entry, library=library), entry.record.as_marc()))
    return out


CATALOGUE = {
    "CQL": lambda: b"".join(
        mc.iso2709(s)
        for s in [mc.marc21_spec(mc.HONGLOUMENG, holdings=False)]
        + [mc.marc21_spec(generated_book(n), holdings=False) for n in range(GENERATED)]
    ),
    "SCL": lambda: b"".join(mc.iso2709(mc.unimarc_spec(b)) for b in (mc.SANTI, mc.HONGLOUMENG, mc.LIU_YAN)),
    "CDL": lambda: b"".join(
        mc.iso2709(s) for s in (mc.marc21_spec(mc.CIEN_ANOS, holdings=False), mc.xiyouji_spec(), deleted_spec())
    ),
}
TOTAL = 1 + GENERATED + 3 + 3


async def load_catalogue(svc: Services, *, libraries: Iterable[tuple[str, str]] = LIBRARIES) -> set[str]:
    """Members, records and fixed datestamps (CDL 2021-06-01, SCL 2022-03-15, CQL now); the work ids."""
    works: set[str] = set()
    async with svc.db.uow() as uow:
        for code, name in libraries:
            await members.upsert(uow, members.NewInstitution(code, name, "library", city="重庆"))
        for library, data in CATALOGUE.items():
            result = await store_batch(uow.session, library, incoming(data(), library), actor="test")
            works |= result.works
        for library, stamp in (("CDL", OLD), ("SCL", MIDDLE)):
            await uow.session.execute(
                update(BibRecordRow).where(BibRecordRow.library == library).values(updated_at=stamp)
            )
        await uow.commit()
    return works


@pytest.fixture
async def catalogue(svc: Services) -> Services:
    await load_catalogue(svc)
    return svc


# --------------------------------------------------------------------------- helpers


async def oai(client, method: str = "GET", **args: str) -> ET.Element:
    if method == "GET":
        resp = await client.get("/oai", params=args)
    else:
        resp = await client.post("/oai", data=args)
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/xml"
    assert resp.charset == "utf-8"
    body = await resp.read()
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(body)
    check_envelope(root)
    return root


def check_envelope(root: ET.Element) -> None:
    """The structure the OAI-PMH schema requires: responseDate, request, then an error list or the verb."""
    assert root.tag == f"{{{OAI}}}OAI-PMH"
    assert root.get(f"{{{XSI}}}schemaLocation") == f"{OAI} http://www.openarchives.org/OAI/2.0/OAI-PMH.xsd"
    children = list(root)
    assert [c.tag for c in children[:2]] == [f"{{{OAI}}}responseDate", f"{{{OAI}}}request"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", children[0].text)
    assert children[1].text.endswith("/oai")
    rest = children[2:]
    assert rest, "neither an error nor a verb element"
    if rest[0].tag == f"{{{OAI}}}error":
        assert all(c.tag == f"{{{OAI}}}error" for c in rest)
        return
    assert len(rest) == 1
    verb = rest[0]
    assert verb.tag.removeprefix(f"{{{OAI}}}") == children[1].get("verb")
    for rec in verb.iter(f"{{{OAI}}}record"):
        parts = [c.tag for c in rec]
        assert parts[0] == f"{{{OAI}}}header", "a record starts with its header"
        deleted = rec[0].get("status") == "deleted"
        assert parts[1:] == ([] if deleted else [f"{{{OAI}}}metadata"])
        if not deleted:
            assert len(rec[1]) == 1, "metadata holds exactly one element"
    for header in verb.iter(f"{{{OAI}}}header"):
        tags = [c.tag.removeprefix(f"{{{OAI}}}") for c in header]
        assert tags[:2] == ["identifier", "datestamp"] and set(tags[2:]) <= {"setSpec"}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", header[1].text)
        assert header.get("status") in (None, "deleted")
    tokens = verb.findall("o:resumptionToken", NS)
    assert len(tokens) <= 1
    if tokens:
        assert list(verb)[-1] is tokens[0], "the resumptionToken comes last"


def errors(root: ET.Element) -> list[str]:
    return [e.get("code") for e in root.findall("o:error", NS)]


def request_attrs(root: ET.Element) -> dict[str, str]:
    return dict(root.find("o:request", NS).attrib)


def identifiers(root: ET.Element) -> list[str]:
    return [h.findtext("o:identifier", namespaces=NS) for h in root.iter(f"{{{OAI}}}header")]


async def harvest(client, verb: str, method: str = "GET", between=None, **args: str) -> tuple[list[ET.Element], list]:
    """Every header of a list, following resumption tokens; and the (cursor, size, token) of each page."""
    headers: list[ET.Element] = []
    pages = []
    root = await oai(client, method, verb=verb, **args)
    while True:
        assert not errors(root), errors(root)
        body = root.find(f"o:{verb}", NS)
        headers += list(body.iter(f"{{{OAI}}}header"))
        token = body.find("o:resumptionToken", NS)
        if token is None:
            pages.append(None)
            break
        pages.append((int(token.get("cursor")), int(token.get("completeListSize")), token.text))
        if not token.text:
            break
        if between is not None:
            await between()
        root = await oai(client, method, verb=verb, resumptionToken=token.text)
        assert request_attrs(root) == {"verb": verb, "resumptionToken": token.text}
    return headers, pages


# --------------------------------------------------------------------------- the verbs


async def test_identify(client, catalogue):
    root = await oai(client, verb="Identify")
    assert request_attrs(root) == {"verb": "Identify"}
    ident = root.find("o:Identify", NS)
    tags = [c.tag.removeprefix(f"{{{OAI}}}") for c in ident]
    assert tags == [
        "repositoryName",
        "baseURL",
        "protocolVersion",
        "adminEmail",
        "earliestDatestamp",
        "deletedRecord",
        "granularity",
    ]
    assert ident.findtext("o:baseURL", namespaces=NS) == str(client.make_url("/oai"))
    assert ident.findtext("o:protocolVersion", namespaces=NS) == "2.0"
    assert ident.findtext("o:earliestDatestamp", namespaces=NS) == "2021-06-01T12:00:00Z"
    assert ident.findtext("o:deletedRecord", namespaces=NS) == "persistent"
    assert ident.findtext("o:granularity", namespaces=NS) == "YYYY-MM-DDThh:mm:ssZ"
    assert re.fullmatch(r"\S+@(\S+\.)+\S+", ident.findtext("o:adminEmail", namespaces=NS))


async def test_identify_base_url_from_public_url(tmp_path, db_url):
    from aiohttp.test_utils import TestClient, TestServer

    from federation.app import create_app

    settings = make_settings(tmp_path, database_url=db_url, public_url="https://catalogue.example.org/")
    async with TestClient(TestServer(create_app(settings))) as c:
        root = await oai(c, verb="Identify")
    assert root.findtext("o:request", namespaces=NS) == "https://catalogue.example.org/oai"
    assert root.findtext("o:Identify/o:baseURL", namespaces=NS) == "https://catalogue.example.org/oai"
    assert root.findtext("o:Identify/o:adminEmail", namespaces=NS) == "catalogue@catalogue.example.org"


async def test_identify_on_an_empty_repository(client):
    root = await oai(client, verb="Identify")
    assert root.find("o:Identify/o:earliestDatestamp", NS).text


async def test_list_metadata_formats(client, catalogue):
    root = await oai(client, verb="ListMetadataFormats")
    formats = root.findall("o:ListMetadataFormats/o:metadataFormat", NS)
    got = {f.findtext("o:metadataPrefix", namespaces=NS): f for f in formats}
    assert set(got) == {"oai_dc", "marcxml"}
    assert got["oai_dc"].findtext("o:metadataNamespace", namespaces=NS) == OAI_DC
    assert got["oai_dc"].findtext("o:schema", namespaces=NS) == "http://www.openarchives.org/OAI/2.0/oai_dc.xsd"
    assert got["marcxml"].findtext("o:metadataNamespace", namespaces=NS) == MARC
    for f in formats:
        assert [c.tag.removeprefix(f"{{{OAI}}}") for c in f] == ["metadataPrefix", "schema", "metadataNamespace"]

    root = await oai(client, verb="ListMetadataFormats", identifier="oai:twincity:CQL:TC0000001")
    assert request_attrs(root) == {"verb": "ListMetadataFormats", "identifier": "oai:twincity:CQL:TC0000001"}
    assert len(root.findall("o:ListMetadataFormats/o:metadataFormat", NS)) == 2

    for missing in ("oai:twincity:CQL:NOPE", "oai:twincity:XXX:TC0000001", "urn:x", "oai:twincity:CQL"):
        root = await oai(client, verb="ListMetadataFormats", identifier=missing)
        assert errors(root) == ["idDoesNotExist"], missing
        assert request_attrs(root) == {"verb": "ListMetadataFormats", "identifier": missing}


async def test_list_metadata_formats_without_stored_marc(client, catalogue):
    async with catalogue.db.uow() as uow:
        await uow.session.execute(
            update(BibRecordRow).where(BibRecordRow.control_number == "GEN0001").values(marc=None)
        )
        await uow.commit()
    root = await oai(client, verb="ListMetadataFormats", identifier="oai:twincity:CQL:GEN0001")
    prefixes = [p.text for p in root.iter(f"{{{OAI}}}metadataPrefix")]
    assert prefixes == ["oai_dc"]
    root = await oai(client, verb="GetRecord", identifier="oai:twincity:CQL:GEN0001", metadataPrefix="marcxml")
    assert errors(root) == ["cannotDisseminateFormat"]
    headers, _ = await harvest(client, "ListIdentifiers", metadataPrefix="marcxml")
    assert "oai:twincity:CQL:GEN0001" not in [h.findtext("o:identifier", namespaces=NS) for h in headers]
    assert len(headers) == TOTAL - 1


async def test_list_sets(client, catalogue):
    root = await oai(client, verb="ListSets")
    sets = [
        (s.findtext("o:setSpec", namespaces=NS), s.findtext("o:setName", namespaces=NS))
        for s in root.iter(f"{{{OAI}}}set")
    ]
    assert sets == sorted(LIBRARIES)
    root = await oai(client, verb="ListSets", resumptionToken="anything")
    assert errors(root) == ["badResumptionToken"]


async def test_list_sets_without_members(client):
    root = await oai(client, verb="ListSets")
    assert errors(root) == ["noSetHierarchy"]


async def test_get_record_oai_dc(client, catalogue):
    root = await oai(client, verb="GetRecord", identifier="oai:twincity:CQL:TC0000001", metadataPrefix="oai_dc")
    assert request_attrs(root) == {
        "verb": "GetRecord",
        "identifier": "oai:twincity:CQL:TC0000001",
        "metadataPrefix": "oai_dc",
    }
    rec = root.find("o:GetRecord/o:record", NS)
    assert rec.findtext("o:header/o:identifier", namespaces=NS) == "oai:twincity:CQL:TC0000001"
    assert rec.findtext("o:header/o:setSpec", namespaces=NS) == "CQL"
    dc = rec.find("o:metadata/oai_dc:dc", NS)
    assert dc.get(f"{{{XSI}}}schemaLocation") == f"{OAI_DC} http://www.openarchives.org/OAI/2.0/oai_dc.xsd"
    values: dict[str, list[str]] = {}
    for el in dc:
        assert el.tag.startswith(f"{{{DC}}}")
        values.setdefault(el.tag.removeprefix(f"{{{DC}}}"), []).append(el.text)
    assert values["title"] == ["红楼梦"]
    assert values["creator"] == ["曹雪芹"]
    assert "章回小说 -- 中国 -- 清代" in values["subject"]
    assert values["publisher"] == ["人民文学出版社"]
    assert values["date"] == ["1982"]
    assert values["identifier"] == ["urn:isbn:9787020002207"]
    assert values["language"] == ["chi"]
    assert values["type"] == ["Text"]
    assert values["format"] == ["2册 ; 21 cm."]

    root = await oai(client, verb="GetRecord", identifier="oai:twincity:CDL:TC0000003", metadataPrefix="oai_dc")
    dc = root.find("o:GetRecord/o:record/o:metadata/oai_dc:dc", NS)
    assert dc.findtext("dc:title", namespaces=NS) == "Cien años de soledad"
    assert dc.findtext("dc:creator", namespaces=NS) == "García Márquez, Gabriel"
    assert dc.findtext("dc:identifier", namespaces=NS) == "urn:isbn:9788437604947"


async def test_get_record_marcxml_parses_back_with_pymarc(client, catalogue):
    for identifier, title, number in (
        ("oai:twincity:CQL:TC0000001", "红楼梦 /", "TC0000001"),
        ("oai:twincity:CDL:TC0000003", "Cien años de soledad /", "TC0000003"),
    ):
        root = await oai(client, "POST", verb="GetRecord", identifier=identifier, metadataPrefix="marcxml")
        marc_el = root.find("o:GetRecord/o:record/o:metadata/marc:record", NS)
        assert marc_el is not None
        records = pymarc.parse_xml_to_array(io.BytesIO(ET.tostring(marc_el)))
        assert len(records) == 1
        assert records[0]["001"].data == number
        assert records[0]["245"]["a"] == title


async def test_get_record_unimarc_and_vernacular(client, catalogue):
    root = await oai(client, verb="GetRecord", identifier="oai:twincity:SCL:TC0000005", metadataPrefix="oai_dc")
    assert root.findtext(".//dc:title", namespaces=NS) == "刘䶮与南汉 : 附𠀀字考"
    root = await oai(client, verb="GetRecord", identifier="oai:twincity:CDL:TC0000004", metadataPrefix="oai_dc")
    titles = [t.text for t in root.iter(f"{{{DC}}}title")]
    assert "西游记" in titles[0] and any("Xi you ji" in t for t in titles)


async def test_get_record_deleted(client, catalogue):
    for prefix in ("oai_dc", "marcxml"):
        root = await oai(client, verb="GetRecord", identifier="oai:twincity:CDL:DEL0001", metadataPrefix=prefix)
        rec = root.find("o:GetRecord/o:record", NS)
        assert rec.find("o:header", NS).get("status") == "deleted"
        assert rec.find("o:metadata", NS) is None


async def test_get_record_errors(client, catalogue):
    root = await oai(client, verb="GetRecord", identifier="oai:twincity:CQL:TC0000001", metadataPrefix="mods")
    assert errors(root) == ["cannotDisseminateFormat"]
    assert request_attrs(root)["metadataPrefix"] == "mods"
    root = await oai(client, verb="GetRecord", identifier="oai:twincity:CQL:NOPE", metadataPrefix="oai_dc")
    assert errors(root) == ["idDoesNotExist"]
    root = await oai(client, verb="GetRecord", identifier="oai:twincity:CQL:TC0000001")
    assert errors(root) == ["badArgument"]
    assert request_attrs(root) == {}, "a badArgument answer echoes no arguments"
    root = await oai(client, verb="GetRecord", metadataPrefix="oai_dc")
    assert errors(root) == ["badArgument"]


async def test_list_records_every_record_exactly_once(client, catalogue):
    headers, pages = await harvest(client, "ListRecords", metadataPrefix="oai_dc")
    ids = [h.findtext("o:identifier", namespaces=NS) for h in headers]
    assert len(ids) == TOTAL and len(set(ids)) == TOTAL
    assert [p[:2] for p in pages] == [(0, TOTAL), (100, TOTAL)]
    assert pages[0][2] and pages[-1][2] is None, "the last page has an empty resumptionToken"
    stamps = [h.findtext("o:datestamp", namespaces=NS) for h in headers]
    assert stamps == sorted(stamps)
    deleted = [h for h in headers if h.get("status") == "deleted"]
    assert [h.findtext("o:identifier", namespaces=NS) for h in deleted] == ["oai:twincity:CDL:DEL0001"]


async def test_list_identifiers_paged_by_post(client, catalogue):
    headers, pages = await harvest(client, "ListIdentifiers", "POST", metadataPrefix="marcxml")
    ids = [h.findtext("o:identifier", namespaces=NS) for h in headers]
    assert len(ids) == TOTAL == len(set(ids))
    assert len(pages) == 2


async def test_small_list_has_no_resumption_token(client, catalogue):
    root = await oai(client, verb="ListRecords", metadataPrefix="marcxml", set="SCL")
    body = root.find("o:ListRecords", NS)
    assert body.find("o:resumptionToken", NS) is None
    assert len(body.findall("o:record", NS)) == 3
    for rec in body.findall("o:record", NS):
        assert rec.find("o:metadata/marc:record", NS) is not None


async def test_resumption_is_stable_under_concurrent_inserts(client, catalogue):
    async def insert_more() -> None:
        if inserted:
            return
        books = [generated_book(n) for n in range(500, 505)]
        data = b"".join(mc.iso2709(mc.marc21_spec(b, holdings=False)) for b in books)
        async with catalogue.db.uow() as uow:
            await store_batch(uow.session, "CQL", incoming(data, "CQL"), actor="test")
            await uow.commit()
        inserted.append(True)

    inserted: list[bool] = []
    headers, pages = await harvest(client, "ListIdentifiers", between=insert_more, metadataPrefix="oai_dc")
    ids = [h.findtext("o:identifier", namespaces=NS) for h in headers]
    assert len(ids) == len(set(ids)) == TOTAL + 5
    assert {f"oai:twincity:CQL:GEN{n:04d}" for n in range(500, 505)} <= set(ids)


async def test_from_until_and_set(client, catalogue):
    async def ids(**args: str) -> list[str]:
        root = await oai(client, verb="ListIdentifiers", metadataPrefix="oai_dc", **args)
        return identifiers(root) if not errors(root) else errors(root)

    cdl = {"oai:twincity:CDL:TC0000003", "oai:twincity:CDL:TC0000004", "oai:twincity:CDL:DEL0001"}
    scl = {f"oai:twincity:SCL:{n}" for n in ("TC0000001", "TC0000002", "TC0000005")}
    assert set(await ids(until="2021-06-01")) == cdl
    assert set(await ids(until="2021-06-01T12:00:00Z")) == cdl
    assert await ids(until="2021-06-01T11:59:59Z") == ["noRecordsMatch"]
    assert await ids(until="2021-05-31") == ["noRecordsMatch"]
    assert set(await ids(**{"from": "2021-06-01", "until": "2022-03-15"})) == cdl | scl
    assert set(await ids(**{"from": "2021-06-01T12:00:00Z", "until": "2022-03-15T08:30:00Z"})) == cdl | scl
    assert set(await ids(**{"from": "2021-06-01T12:00:01Z", "until": "2022-03-15T08:30:00Z"})) == scl
    assert set(await ids(**{"from": "2022-03-15", "until": "2022-03-15"})) == scl
    assert set(await ids(set="CDL")) == cdl
    assert set(await ids(set="SCL", until="2023-01-01")) == scl
    assert await ids(set="SCL", until="2021-12-31") == ["noRecordsMatch"]
    assert await ids(set="NOPE") == ["noRecordsMatch"]
    assert await ids(**{"from": "2999-01-01"}) == ["noRecordsMatch"]
    headers, pages = await harvest(client, "ListIdentifiers", metadataPrefix="oai_dc", set="CQL")
    assert len(headers) == 1 + GENERATED and len(pages) == 2
    root = await oai(client, verb="ListIdentifiers", metadataPrefix="oai_dc", set="CQL")
    assert request_attrs(root) == {"verb": "ListIdentifiers", "metadataPrefix": "oai_dc", "set": "CQL"}
    assert all(h.findtext("o:setSpec", namespaces=NS) == "CQL" for h in root.iter(f"{{{OAI}}}header"))


async def test_from_until_errors(client, catalogue):
    for args in (
        {"from": "2022-01-01", "until": "2021-01-01"},
        {"from": "2022-01-01T00:00:00Z", "until": "2021-12-31T23:59:59Z"},
        {"from": "2021-01-01", "until": "2022-01-01T00:00:00Z"},
        {"from": "2021-01-01T00:00:00"},
        {"from": "2021-01-01T00:00Z"},
        {"until": "2021-13-01"},
        {"until": "yesterday"},
        {"from": "2021-01-01T00:00:00.5Z"},
        {"from": ""},
    ):
        root = await oai(client, verb="ListRecords", metadataPrefix="oai_dc", **args)
        assert errors(root) == ["badArgument"], args
        assert request_attrs(root) == {}


async def test_bad_verb(client, catalogue):
    for params in ({}, {"verb": "Frobnicate"}, {"verb": "identify"}, {"verb": ""}):
        root = await oai(client, **params)
        assert errors(root) == ["badVerb"], params
        assert request_attrs(root) == {}
    resp = await client.get("/oai?verb=Identify&verb=Identify")
    root = ET.fromstring(await resp.read())
    assert errors(root) == ["badVerb"]
    root = await oai(client, "POST")
    assert errors(root) == ["badVerb"]
    # a POST must be form-encoded
    resp = await client.post("/oai", json={"verb": "Identify"})
    assert resp.status == 200 and errors(ET.fromstring(await resp.read())) == ["badVerb"]


async def test_bad_argument(client, catalogue):
    cases = [
        {"verb": "Identify", "extra": "1"},
        {"verb": "ListRecords"},
        {"verb": "ListIdentifiers", "metadataPrefix": "oai_dc", "identifier": "x"},
        {"verb": "ListSets", "set": "CQL"},
        {"verb": "ListMetadataFormats", "metadataPrefix": "oai_dc"},
        {"verb": "ListRecords", "metadataPrefix": ""},
    ]
    for params in cases:
        root = await oai(client, **params)
        assert set(errors(root)) == {"badArgument"}, params
        assert request_attrs(root) == {}
    resp = await client.get("/oai?verb=ListRecords&metadataPrefix=oai_dc&metadataPrefix=oai_dc")
    assert errors(ET.fromstring(await resp.read())) == ["badArgument"]
    resp = await client.get("/oai?verb=GetRecord&identifier=a&identifier=b&metadataPrefix=oai_dc")
    assert errors(ET.fromstring(await resp.read())) == ["badArgument"]


async def test_resumption_token_errors(client, catalogue):
    root = await oai(client, verb="ListRecords", metadataPrefix="oai_dc")
    token = root.findtext("o:ListRecords/o:resumptionToken", namespaces=NS)
    assert token
    # exclusive
    root = await oai(client, verb="ListRecords", metadataPrefix="oai_dc", resumptionToken=token)
    assert errors(root) == ["badArgument"]
    # tampered, truncated, foreign, for another verb
    body, sig = token.split(".")
    forged = body[:-2] + ("AA" if body[-2:] != "AA" else "BB") + "." + sig
    for bad in (forged, token[:-3], "garbage", "a.b", token + "x", "." * 3000):
        root = await oai(client, verb="ListRecords", resumptionToken=bad)
        assert errors(root) == ["badResumptionToken"], bad
        assert request_attrs(root) == {"verb": "ListRecords", "resumptionToken": bad[:3000]}
    root = await oai(client, verb="ListIdentifiers", resumptionToken=token)
    assert errors(root) == ["badResumptionToken"]
    root = await oai(client, verb="ListRecords", resumptionToken="")
    assert errors(root) == ["badResumptionToken"]
    # the token is opaque but honest: it continues the very list
    root = await oai(client, verb="ListRecords", resumptionToken=token)
    assert not errors(root)
    assert root.find("o:ListRecords/o:resumptionToken", NS).get("cursor") == "100"


async def test_cannot_disseminate_and_no_records(client, catalogue):
    for verb in ("ListRecords", "ListIdentifiers"):
        root = await oai(client, verb=verb, metadataPrefix="mods")
        assert errors(root) == ["cannotDisseminateFormat"]
        assert request_attrs(root) == {"verb": verb, "metadataPrefix": "mods"}


async def test_no_records_match_on_an_empty_repository(client):
    root = await oai(client, verb="ListRecords", metadataPrefix="oai_dc")
    assert errors(root) == ["noRecordsMatch"]


async def test_user_input_is_escaped(client, catalogue):
    nasty = 'oai:twincity:CQL:<x a="1">&\x01\ud800'
    root = await oai(client, verb="GetRecord", identifier=nasty, metadataPrefix="oai_dc")
    assert errors(root) == ["idDoesNotExist"]
    assert request_attrs(root)["identifier"] == 'oai:twincity:CQL:<x a="1">&'
    resp = await client.get("/oai", params={"verb": "Identify", "<bad>": "&"})
    root = ET.fromstring(await resp.read())
    assert errors(root) == ["badArgument"]


async def test_identifier_with_reserved_characters(client, svc):
    book = dataclasses.replace(generated_book(1), control_number="ocm 12#34")
    async with svc.db.uow() as uow:
        data = mc.iso2709(mc.marc21_spec(book, holdings=False))
        await store_batch(uow.session, "CQL", incoming(data, "CQL"), actor="test")
        await uow.commit()
    root = await oai(client, verb="ListIdentifiers", metadataPrefix="oai_dc")
    (identifier,) = identifiers(root)
    assert identifier == "oai:twincity:CQL:ocm%2012%2334"
    root = await oai(client, verb="GetRecord", identifier=identifier, metadataPrefix="marcxml")
    assert root.find(".//marc:controlfield[@tag='001']", NS).text == "ocm 12#34"


# --------------------------------------------------------------------------- a standard harvester


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory):
    server = LiveServer(tmp_path_factory.mktemp("oai-live"), load_catalogue)
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_sickle_harvests_everything(live, method):
    sickle = pytest.importorskip("sickle")
    from sickle.oaiexceptions import BadArgument, CannotDisseminateFormat, IdDoesNotExist, NoRecordsMatch

    client = sickle.Sickle(f"http://127.0.0.1:{live.port}/oai", http_method=method, max_retries=0, timeout=30)
    identify = client.Identify()
    assert identify.protocolVersion == "2.0"
    assert identify.deletedRecord == "persistent"
    assert identify.granularity == "YYYY-MM-DDThh:mm:ssZ"
    assert {f.metadataPrefix for f in client.ListMetadataFormats()} == {"oai_dc", "marcxml"}
    assert sorted((s.setSpec, s.setName) for s in client.ListSets()) == sorted(LIBRARIES)

    records = list(client.ListRecords(metadataPrefix="oai_dc"))
    assert len(records) == TOTAL == len({r.header.identifier for r in records})
    assert sum(r.header.deleted for r in records) == 1
    live_records = [r for r in records if not r.header.deleted]
    hlm = next(r for r in live_records if r.header.identifier == "oai:twincity:CQL:TC0000001")
    assert hlm.metadata["title"] == ["红楼梦"]
    assert hlm.metadata["creator"] == ["曹雪芹"]
    assert hlm.header.setSpecs == ["CQL"]

    kept = list(client.ListIdentifiers(metadataPrefix="marcxml", ignore_deleted=True))
    assert len(kept) == TOTAL - 1
    scl = list(client.ListIdentifiers(metadataPrefix="oai_dc", set="SCL", **{"from": "2022-01-01"}))
    assert {h.identifier for h in scl} == {f"oai:twincity:SCL:{n}" for n in ("TC0000001", "TC0000002", "TC0000005")}

    rec = client.GetRecord(identifier="oai:twincity:CDL:TC0000003", metadataPrefix="marcxml")
    marc_el = rec.xml.find(f".//{{{MARC}}}record")
    parsed = pymarc.parse_xml_to_array(io.BytesIO(ET.tostring(_to_etree(marc_el))))
    assert parsed[0]["245"]["a"] == "Cien años de soledad /"

    with pytest.raises(IdDoesNotExist):
        client.GetRecord(identifier="oai:twincity:CQL:NOPE", metadataPrefix="oai_dc")
    with pytest.raises(CannotDisseminateFormat):
        client.GetRecord(identifier="oai:twincity:CQL:TC0000001", metadataPrefix="mods")
    with pytest.raises(NoRecordsMatch):
        list(client.ListIdentifiers(metadataPrefix="oai_dc", set="NOPE"))
    with pytest.raises(BadArgument):
        list(client.ListRecords(metadataPrefix="oai_dc", **{"from": "2022-01-01", "until": "2021-01-01"}))


def _to_etree(lxml_element) -> ET.Element:
    from lxml import etree

    return ET.fromstring(etree.tostring(lxml_element))
