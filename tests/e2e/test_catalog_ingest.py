"""Loading MARC files over HTTP: a librarian uploads, a job loads, the records are searchable with their copies.

Every format and encoding of ``tests/fixtures/marc_corpus.py`` goes through ``POST /api/v1/catalog/imports``
(multipart), the job is watched through ``GET /api/v1/jobs/{id}`` until it finishes, and the result is checked
in the search and on the work. Broken files load what is good and report each bad record with its position
and a reason; nothing loaded before is lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from federation.app import SERVICES
from library.catalog.models import BibRecordRow
from tests.conftest import token_for
from tests.fixtures import marc_corpus as mc

IMPORTS = "/api/v1/catalog/imports"
DEADLINE_S = 30.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return mc.write_corpus(tmp_path_factory.mktemp("corpus"))


# --------------------------------------------------------------------------- helpers


def form(path: Path | None, **fields: str) -> FormData:
    data = FormData(default_to_multipart=True)  # multipart even without a file part
    for name, value in fields.items():
        data.add_field(name, value)
    if path is not None:
        data.add_field("file", path.read_bytes(), filename=path.name, content_type="application/octet-stream")
    return data


async def upload(client: TestClient, headers: dict[str, str], path: Path | None, **fields: str) -> Any:
    return await client.post(IMPORTS, data=form(path, **fields), headers=headers)


async def finished(client: TestClient, headers: dict[str, str], job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        resp = await client.get(f"/api/v1/jobs/{job_id}", headers=headers)
        assert resp.status == 200, await resp.text()
        job = await resp.json()
        if job["state"] in ("succeeded", "failed"):
            return job
        assert time.monotonic() < deadline, f"import job still {job['state']} after {DEADLINE_S}s"
        await asyncio.sleep(0.05)


async def load(client: TestClient, headers: dict[str, str], path: Path, **fields: str) -> dict[str, Any]:
    """Upload, expect 202 with a job id, wait for the job; returns its result (the ingest report)."""
    fields.setdefault("library", "CQL")
    resp = await upload(client, headers, path, **fields)
    assert resp.status == 202, await resp.text()
    accepted = await resp.json()
    assert len(accepted["job_id"]) == 32 and accepted["state"] in ("queued", "running", "succeeded")
    job = await finished(client, headers, accepted["job_id"])
    assert job["state"] == "succeeded", job["error"]
    assert job["kind"] == "catalog.ingest"
    result = job["result"]
    for key in ("added", "updated", "unchanged", "rejected", "rejections", "records_per_second"):
        assert key in result, key
    return result


async def search(client: TestClient, q: str, **params: str) -> dict[str, Any]:
    resp = await client.get("/api/v1/catalog/search", params={"q": q, **params})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def first_title(client: TestClient, q: str) -> str | None:
    body = await search(client, q)
    return body["items"][0]["title"] if body["items"] else None


async def work(client: TestClient, work_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/catalog/works/{work_id}")
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def records_of(svc: Any, library: str) -> int:
    async with svc.db.reader() as s:
        q = select(func.count()).select_from(BibRecordRow).where(BibRecordRow.library == library)
        return int((await s.execute(q)).scalar_one())


# --------------------------------------------------------------------------- every format and encoding


@dataclass(frozen=True)
class Expected:
    title: str
    author_query: str  # an author's name as a reader types it
    isbn: str  # ISBN-13
    copies: dict[str, str]  # barcode -> status: the library's copies, read through the holdings preset


def _marc21(cn: str) -> dict[str, str]:
    # Koha 952: $p barcode; the second copy has $1 (lost) set
    return {f"B{cn}1": "available", f"B{cn}2": "lost"}


HLM_21 = Expected("红楼梦", "曹雪芹", "9787020002207", _marc21("TC0000001"))
SANTI_21 = Expected("三体", "刘慈欣", "9787536692930", _marc21("TC0000002"))
CIEN_21 = Expected("Cien años de soledad", "García Márquez", "9788437604947", _marc21("TC0000003"))
XIYOUJI_21 = Expected("西游记", "吴承恩", "9787020008728", {})
MARC21_BOOKS = (HLM_21, SANTI_21, CIEN_21, XIYOUJI_21)


def _cnmarc(preset: str, *books: tuple[str, str, str, str]) -> tuple[Expected, ...]:
    # 905 $b is "0<last three digits of 001>01", 995 $f "9<...>01"; neither says the copy is out
    lead = "0" if preset == "cnmarc_905" else "9"
    return tuple(Expected(t, a, i, {f"{lead}{cn[-3:]}01": "available"}) for cn, t, a, i in books)


_HLM = ("TC0000001", "红楼梦", "曹雪芹", "9787020002207")
_SANTI = ("TC0000002", "三体", "刘慈欣", "9787536692930")
_CIEN = ("TC0000003", "Cien años de soledad", "García Márquez", "9788437604947")
_LIU_YAN = ("TC0000005", "刘䶮与南汉", "陈明", "9787101000009")

FORMATS = [
    # file, format, encoding, holdings preset, expected books, records stored
    ("marc21_utf8.mrc", "marc21", "utf-8", "marc21_952", MARC21_BOOKS),
    ("marc21_marc8.mrc", "marc21", "marc-8", "marc21_952", MARC21_BOOKS),
    # + a UNIMARC 三体 with the same 001 after the MARC21 one: the last wins, and its 905/995 are not 952 items
    (
        "marc21.xml",
        "marcxml",
        "auto",
        "marc21_952",
        (HLM_21, dataclasses.replace(SANTI_21, copies={}), CIEN_21, XIYOUJI_21),
    ),
    ("marc21.ndjson", "marcjson", "auto", "marc21_952", MARC21_BOOKS),
    ("marc21.json", "marcjson", "auto", "marc21_952", MARC21_BOOKS),
    ("unimarc_utf8.mrc", "unimarc", "utf-8", "cnmarc_995", _cnmarc("cnmarc_995", _HLM, _SANTI, _CIEN, _LIU_YAN)),
    ("unimarc_gbk.mrc", "unimarc", "gbk", "cnmarc_905", _cnmarc("cnmarc_905", _HLM, _SANTI)),
    ("unimarc_gb18030.mrc", "unimarc", "gb18030", "cnmarc_995", _cnmarc("cnmarc_995", _HLM, _SANTI, _CIEN, _LIU_YAN)),
    ("unimarc_gb2312.mrc", "auto", "auto", "cnmarc_905", _cnmarc("cnmarc_905", _HLM, _SANTI)),  # detected
]


@pytest.mark.parametrize(("name", "fmt", "encoding", "holdings", "books"), FORMATS, ids=[f[0] for f in FORMATS])
async def test_each_format_and_encoding_loads_and_is_searchable(
    client, demo, corpus, name, fmt, encoding, holdings, books
):
    cql = await token_for(client, "librarian@CQL")
    path = corpus[name]
    result = await load(client, cql, path, format=fmt, encoding=encoding, holdings=holdings)
    assert (result["added"], result["updated"], result["unchanged"]) == (len(books), 0, 0), result
    assert (result["rejected"], result["rejections"]) == (0, []), result
    assert await records_of(demo, "CQL") == len(books)

    for book in books:
        by_title = await search(client, book.title)
        assert by_title["items"], f"{name}: {book.title} not found"
        hit = by_title["items"][0]
        assert hit["title"] == book.title, (name, by_title["items"])
        assert hit["libraries"] == ["CQL"] and book.isbn in hit["isbns"]
        assert await first_title(client, book.author_query) == book.title, (name, book.author_query)
        by_isbn = await search(client, book.isbn)
        assert [h["id"] for h in by_isbn["items"]] == [hit["id"]], (name, book.isbn)
        assert (await search(client, f"isbn:{book.isbn}"))["total"] == 1

        shown = await work(client, hit["id"])
        assert [h["library"] for h in shown["holdings"]] == ["CQL"]
        copies = shown["holdings"][0]["items"]
        assert {i["barcode"]: i["status"] for i in copies} == book.copies, (name, book.title, copies)
        assert shown["holdings"][0]["available"] == list(book.copies.values()).count("available")
        assert [r["library"] for r in shown["records"]] == ["CQL"]

    again = await load(client, cql, path, format=fmt, encoding=encoding, holdings=holdings)
    assert (again["added"], again["updated"], again["unchanged"], again["rejected"]) == (0, 0, len(books), 0)
    assert await records_of(demo, "CQL") == len(books)


async def test_copies_land_where_the_preset_says(client, demo, corpus):
    cql = await token_for(client, "librarian@CQL")
    await load(client, cql, corpus["marc21_utf8.mrc"], format="marc21", holdings="marc21_952")
    hit = (await search(client, "红楼梦"))["items"][0]
    copies = {i["barcode"]: i for i in (await work(client, hit["id"]))["holdings"][0]["items"]}
    # Koha 952: $a home branch, $o call number, $y item type
    assert {b: (i["location"], i["call_number"], i["item_type"]) for b, i in copies.items()} == {
        "BTC00000011": ("CD01", "I242.4/1", "BOOK"),
        "BTC00000012": ("CQ02", "I242.4/1", "BOOK"),
    }
    await load(client, cql, corpus["unimarc_gbk.mrc"], format="unimarc", encoding="gbk", holdings="cnmarc_905")
    # the CNMARC record replaced the MARC21 one of the same control number: its 905 copy replaced the 952 ones
    copies = (await work(client, hit["id"]))["holdings"][0]["items"]
    assert [(i["barcode"], i["location"], i["call_number"]) for i in copies] == [("000101", "中文书库", "I242.4/12")]


# --------------------------------------------------------------------------- broken files

GOOD_A, GOOD_B, GOOD_C = mc.good_records()
AFTER_A = len(GOOD_A)

# kind -> (position, byte offset, a word of the reason, control number) of the one rejection; None: none
BROKEN = {
    "truncated_tail": (2, AFTER_A + len(GOOD_B), "truncated", "TC0000003"),
    "truncated_middle": (1, AFTER_A, "truncated", "TC0000002"),
    "wrong_length_long": (1, AFTER_A, "wrong record length", "TC0000002"),
    "wrong_length_short": (1, AFTER_A, "wrong record length", "TC0000002"),
    "nonnumeric_length": (1, AFTER_A, "not numeric", "TC0000002"),
    "bad_indicators": (1, AFTER_A, "indicators", "TC0000002"),
    "undecodable": (1, AFTER_A, "utf-8", "TC0000002"),
    "zero_byte": (1, AFTER_A, "0-byte record", None),
    "zero_length": (1, AFTER_A, "00000", "TC0000002"),
    "past_end": (1, AFTER_A, "past the end", "TC0000002"),
    "random_bytes": (1, AFTER_A, "unparseable", None),
    "random_only": (0, 0, "no record", None),
    "big": None,  # a well-formed record of 99,999 bytes with a 9,999-byte field: loaded
}


async def test_broken_files_load_the_good_records_and_report_each_bad_one(client, demo, corpus):
    cql = await token_for(client, "librarian@CQL")
    base = await load(client, cql, corpus["marc21_utf8.mrc"], format="marc21", holdings="marc21_952")
    assert base["added"] == 4
    assert set(BROKEN) == set(mc.BROKEN_KINDS) - {"empty"}

    for kind, expected in BROKEN.items():
        result = await load(client, cql, corpus[f"broken_{kind}.mrc"], format="marc21", holdings="marc21_952")
        if expected is None:
            assert (result["added"], result["rejected"]) == (1, 0), (kind, result)
            continue
        position, offset, reason, control_number = expected
        assert result["rejected"] == 1, (kind, result)
        (rejection,) = result["rejections"]
        assert (rejection["position"], rejection["offset"]) == (position, offset), (kind, rejection)
        assert reason in rejection["reason"], (kind, rejection)
        assert rejection["control_number"] == control_number, (kind, rejection)
        # the good records around the bad one are the ones loaded at first: unchanged
        assert (result["added"], result["updated"]) == (0, 0), (kind, result)
        assert result["unchanged"] == {0: 0, 2: 2}.get(position, 2), (kind, result)

    # nothing loaded before is lost
    assert await records_of(demo, "CQL") == 5  # the four, and the 99,999-byte record
    for book in MARC21_BOOKS:
        assert await first_title(client, book.title) == book.title
    assert await first_title(client, "biggest record") == "The biggest record"


async def test_an_empty_upload_is_refused_and_changes_nothing(client, demo, corpus):
    cql = await token_for(client, "librarian@CQL")
    await load(client, cql, corpus["marc21_utf8.mrc"], format="marc21")
    resp = await upload(client, cql, corpus["broken_empty.mrc"], library="CQL", format="marc21")
    assert resp.status == 422
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["code"] == "catalog.bad_import" and "empty" in body["detail"]
    no_file = await upload(client, cql, None, library="CQL", format="marc21")
    assert no_file.status == 422 and (await no_file.json())["code"] == "catalog.bad_import"
    assert await records_of(demo, "CQL") == 4
    assert list((demo.settings.data_dir / "uploads").iterdir()) == []  # refused uploads leave no file behind


# --------------------------------------------------------------------------- who may load, and bad requests


async def test_a_librarian_loads_only_for_their_own_library(client, demo, corpus):
    scl = await token_for(client, "librarian@SCL")
    resp = await upload(client, scl, corpus["marc21_utf8.mrc"], library="CQL", format="marc21")
    assert resp.status == 403
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["code"] == "forbidden"
    assert (await upload(client, {}, corpus["marc21_utf8.mrc"], library="CQL")).status == 401
    doctor = await token_for(client, "doctor@CQH1")
    assert (await upload(client, doctor, corpus["marc21_utf8.mrc"], library="CQH1")).status == 403
    assert await records_of(demo, "CQL") == 0

    # without a library field the record belongs to the librarian's own
    result = await load(client, scl, corpus["unimarc_gb18030.mrc"], library="", format="unimarc")
    assert result["added"] == 4 and await records_of(demo, "SCL") == 4
    # an administrator loads for any member
    admin = await token_for(client, "admin@federation")
    result = await load(client, admin, corpus["marc21_utf8.mrc"], library="cdl", format="marc21")
    assert result["added"] == 4 and await records_of(demo, "CDL") == 4
    hit = (await search(client, "红楼梦"))["items"][0]
    assert sorted(hit["libraries"]) == ["CDL", "SCL"]


@pytest.mark.parametrize(
    "fields",
    [
        {"format": "marc99"},
        {"format": "MARC 21"},
        {"encoding": "ebcdic"},
        {"holdings": "no-such-layout"},
        {"colour": "blue"},
    ],
    ids=["format", "format-spaced", "encoding", "holdings", "unknown-field"],
)
async def test_bad_form_fields_are_refused_as_problems(client, demo, corpus, fields):
    cql = await token_for(client, "librarian@CQL")
    resp = await upload(client, cql, corpus["marc21_utf8.mrc"], library="CQL", **fields)
    assert resp.status in (400, 422), await resp.text()
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["code"] == "catalog.bad_import" and body["detail"]
    assert await records_of(demo, "CQL") == 0
    assert list((demo.settings.data_dir / "uploads").iterdir()) == []


async def test_not_multipart_is_refused(client, demo):
    cql = await token_for(client, "librarian@CQL")
    resp = await client.post(IMPORTS, json={"file": "x"}, headers=cql)
    assert resp.status == 415
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["code"] == "unsupported_media_type"


async def test_records_belong_to_a_member_library(client, demo, corpus):
    admin = await token_for(client, "admin@federation")
    path = corpus["marc21_utf8.mrc"]
    for library, detail in (("NOPE", "no member library NOPE"), ("CQH1", "CQH1 is not a library")):
        resp = await upload(client, admin, path, library=library, format="marc21")
        assert resp.status == 422, await resp.text()
        body = await resp.json()
        assert (body["code"], body["detail"]) == ("catalog.bad_import", detail)
    assert list((demo.settings.data_dir / "uploads").iterdir()) == []


async def test_one_file_per_import(client, demo, corpus):
    cql = await token_for(client, "librarian@CQL")
    data = form(corpus["marc21_utf8.mrc"], library="CQL")
    data.add_field("file", corpus["unimarc_gbk.mrc"].read_bytes(), filename="second.mrc")
    resp = await client.post(IMPORTS, data=data, headers=cql)
    assert resp.status == 422 and (await resp.json())["code"] == "catalog.bad_import"
    assert list((demo.settings.data_dir / "uploads").iterdir()) == []


async def test_a_refused_upload_leaves_no_file_whichever_order_the_parts_come_in(client, demo, corpus):
    scl = await token_for(client, "librarian@SCL")
    fields_first = form(corpus["marc21_utf8.mrc"], library="CQL", format="marc21")
    file_first = FormData()
    file_first.add_field("file", corpus["marc21_utf8.mrc"].read_bytes(), filename="x.mrc")
    file_first.add_field("library", "CQL")
    for data in (fields_first, file_first):
        resp = await client.post(IMPORTS, data=data, headers=scl)
        assert resp.status == 403
        assert list((demo.settings.data_dir / "uploads").iterdir()) == []


# --------------------------------------------------------------------------- finding what was loaded


async def test_searches_find_the_loaded_work_first_among_many(client, demo, corpus):
    """With a few hundred other works around (a small demo catalogue), the expected work ranks first."""
    from library.catalog import demo as demo_catalogue

    svc = client.app[SERVICES]
    await demo_catalogue.load(svc, per_library=150)
    cql = await token_for(client, "librarian@CQL")
    scl = await token_for(client, "librarian@SCL")
    await load(client, cql, corpus["marc21_utf8.mrc"], format="marc21", holdings="marc21_952")
    await load(client, scl, corpus["unimarc_gb18030.mrc"], library="SCL", format="unimarc", encoding="gb18030")
    assert (await search(client, ""))["total"] > 300

    # ISBN-10 (as printed in the book, with hyphens or without) finds the ISBN-13 record first
    for q in ("84-376-0494-X", "843760494x", "isbn:84-376-0494-X"):
        assert await first_title(client, q) == "Cien años de soledad", q
    # an accented Latin word typed without its accent
    for q in ("anos", "Cien anos de soledad", "garcia marquez", "MARQUEZ"):
        assert await first_title(client, q) == "Cien años de soledad", q
    # a two-character word inside a longer Chinese title
    assert await first_title(client, "南汉") == "刘䶮与南汉"
    assert await first_title(client, "楼梦") == "红楼梦"
    assert await first_title(client, "游记") == "西游记"
    assert await first_title(client, "平凡") == "平凡的世界"

    # the uploaded records joined the demo's works by ISBN: one work, every library's copies
    (hit,) = (await search(client, "9787020002207"))["items"]
    assert hit["title"] == "红楼梦" and sorted(hit["libraries"]) == ["CDL", "CQL", "SCL"]
    shown = await work(client, hit["id"])
    assert sorted(r["control_number"] for r in shown["records"]) == [
        "SC00900001",
        "TC0000001",
        "TC0000001",
        "b00900001",
        "cq00900001",
    ]
    copies = {h["library"]: {i["barcode"] for i in h["items"]} for h in shown["holdings"]}
    assert copies["CQL"] == {"BTC00000011", "BTC00000012", "CQL9000010", "CQL9000011"}
    assert copies["SCL"] == {"SCL9000010", "SCL9000011"}  # the upload named no holdings layout: no copies
