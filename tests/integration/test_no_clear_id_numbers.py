"""Acceptance: the clear ID number appears nowhere in the database file or the logs.

The demo world is loaded and more residents are registered, looked up, cross-referenced and logged in
(and failed to log in) over HTTP with every logger at DEBUG. Then the raw bytes of the SQLite database,
its WAL and shared-memory files and everything in the data directory are searched for every number in
every spelling (18 and 15 digits, lower-case x, full-width) as UTF-8 and UTF-16; on PostgreSQL every row
of every table is dumped as JSON and searched. The captured log output is searched the same way.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from federation import demo as demo_world
from federation import logs
from federation.identity import service
from federation.identity.idnumber import check_digit
from federation.models import Base
from tests.conftest import token_for


def id_number(region: str, birth: str, seq: str) -> str:
    first17 = region + birth + seq
    return first17 + check_digit(first17)


# residents registered in this test, besides the demo's
EXTRA = [
    id_number("500103", "19721103", "415"),
    id_number("510106", "19990707", "282"),
    id_number("500112", "19650101", "739"),
    id_number("510802", "19880808", "123"),
]
DEMO = [r.id_number for r in demo_world.RESIDENTS]
NUMBERS = DEMO + EXTRA
assert any(n.endswith("X") for n in NUMBERS)


def old_forms(number: str) -> list[str]:
    """The 15-digit form (no century, no check character), which exists for those born in the 1900s."""
    return [number[:6] + number[8:17]] if number[6:8] == "19" else []


def spellings(number: str) -> set[str]:
    forms = {number, number.lower(), *old_forms(number)}
    forms |= {"".join(chr(ord(c) + 0xFEE0) for c in f) for f in list(forms)}  # full-width
    return forms


FORMS = sorted({f for n in NUMBERS for f in spellings(n)})


def needles() -> list[tuple[str, bytes]]:
    out = []
    for form in FORMS:
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            out.append((f"{form[:6]}… ({encoding})", form.encode(encoding)))
    return out


def assert_text_clean(where: str, haystack: str) -> None:
    found = [f"{f[:6]}…({len(f)})" for f in FORMS if f in haystack]
    assert not found, f"clear ID numbers in {where}: {found}"


def assert_bytes_clean(where: str, data: bytes) -> None:
    found = [label for label, needle in needles() if needle in data]
    assert not found, f"clear ID numbers in {where}: {found}"


def assert_files_clean(paths: list[Path], *, recursive: bool = False) -> bytes:
    """Search each existing file (and under each directory); returns all the bytes read."""
    read = []
    if recursive:
        paths = [f for p in paths for f in p.rglob("*")]
    for f in paths:
        if f.is_file():
            read.append(f.read_bytes())
            assert_bytes_clean(f.name, read[-1])
    return b"".join(read)


def checkpoint(path: Path) -> None:
    """Copy the WAL into the database file (the last connection to close would, but one may still be open)."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        conn.execute("PRAGMA wal_checkpoint(FULL)")
    finally:
        conn.close()


def ident(type_: str, value: str, institution: str = "", kind: str | None = None) -> dict:
    out: dict = {"type": type_, "value": value}
    if institution:
        out["institution"] = institution
    if kind:
        out["kind"] = kind
    return out


@pytest.fixture
def log_stream():
    """The service's own log handler (federation.logs.setup) at DEBUG, writing to a string."""
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    logs.setup("DEBUG", json_lines=True, stream=stream)
    yield stream
    for h in list(root.handlers):
        if getattr(h, "_twincity", False):
            root.removeHandler(h)
    root.setLevel(level)


async def exercise(client, svc) -> dict[str, str]:
    """Everything a day brings that handles an ID number; returns a librarian's headers for later."""
    await demo_world.load(svc)
    await demo_world.load(svc)  # idempotent: registers every resident again, as "existing"
    admin = await token_for(client, "admin@federation")
    librarian = await token_for(client, "librarian@SCL")
    doctor = await token_for(client, "doctor@CQH1")

    for i, number in enumerate(EXTRA):
        body = {
            "name": f"居民{i}",
            "phone": f"1390000{i:04d}",
            # a clerk who types the number into every free-text field
            "home_institution": number,
            "identifiers": [
                ident("id_number", number),
                ident("social_security_card", f"SC9{i:06d}"),
                ident("local", f"SCL9{i:05d}", "SCL", f"card of {number}"),
                ident("local", number, number, "hospital_record"),
            ],
        }
        resp = await client.post("/api/v1/identity/persons", json=body, headers=librarian)
        assert resp.status == 201, await resp.text()
        # again in the other spellings
        for form in spellings(number):
            body = {"name": f"居民{i}", "identifiers": [ident("id_number", form)]}
            resp = await client.post("/api/v1/identity/persons", json=body, headers=librarian)
            assert resp.status == 201, await resp.text()
            assert (await resp.json())["outcome"] == "existing"

    for number in NUMBERS:
        for form in (number, *old_forms(number)):
            resp = await client.post(
                "/api/v1/identity/lookups",
                json={"identifier": ident("id_number", form), "purpose": f"check {number}"},
                headers=doctor,
            )
            assert resp.status == 200, await resp.text()
        resp = await client.post(
            "/api/v1/identity/crossrefs",
            json={"identifier": ident("id_number", number), "target_type": "id_number"},
            headers=librarian,
        )
        assert resp.status == 200
        resp = await client.post("/api/v1/identity/checks", json={"value": number}, headers=doctor)
        assert (await resp.json())["valid"] is True
        # a wrong check digit, a wrong birth date: refused without echoing
        wrong = number[:17] + ("0" if number[17] != "0" else "1")
        resp = await client.post("/api/v1/identity/checks", json={"value": wrong}, headers=doctor)
        assert (await resp.json())["valid"] is False
        resp = await client.post(
            "/api/v1/identity/persons", json={"name": "x", "identifiers": [ident("id_number", wrong)]}, headers=admin
        )
        assert resp.status == 422
        # a number in the wrong field, in an unknown field
        resp = await client.post("/api/v1/identity/persons", json={"name": f"张三{number}"}, headers=admin)
        assert resp.status == 422
        resp = await client.post("/api/v1/identity/persons", json={"name": "x", "id": number}, headers=admin)
        assert resp.status == 422

    # card changes and a merge
    resp = await client.post(
        "/api/v1/identity/credential-status",
        json={"identifier": ident("id_number", EXTRA[1]), "status": "cancelled"},
        headers=admin,
    )
    assert resp.status == 200
    resp = await client.post(
        "/api/v1/identity/persons",
        json={"name": "居民2", "identifiers": [ident("local", "CDL000999", "CDL", "library_card")]},
        headers=librarian,
    )
    dup = (await resp.json())["person"]["id"]
    resp = await client.post(
        "/api/v1/identity/lookups", json={"identifier": ident("id_number", EXTRA[2])}, headers=admin
    )
    survivor = (await resp.json())["id"]
    resp = await client.post(
        "/api/v1/identity/merges",
        json={"survivor_id": survivor, "merged_id": dup, "reason": f"same as {EXTRA[2]}"},
        headers=admin,
    )
    assert resp.status == 201, await resp.text()

    # residents log in with their number (as a token, and to the portal)
    for r in demo_world.RESIDENTS[4:8]:
        headers = await token_for(client, r.id_number)
        resp = await client.get("/api/v1/me/person", headers=headers)
        assert resp.status == 200
        resp = await client.post("/api/v1/auth/session", json={"username": r.id_number, "password": "demo-password"})
        assert resp.status == 200
        client.session.cookie_jar.clear()
    later = await token_for(client, "librarian@CQL")
    # and get it wrong, in any spelling, until throttled: the address locks, so this comes last
    for number in DEMO[:4] + EXTRA:
        for form in (number, number.lower(), *old_forms(number)):
            resp = await client.post("/api/v1/auth/token", json={"username": form, "password": "wrong-password"})
            assert resp.status in (401, 429)
    return later


async def _dump_postgres(svc) -> str:
    names = [t.name for t in Base.metadata.sorted_tables]
    assert {"persons", "identifiers", "audit_entries", "accounts", "login_throttles", "outbox"} <= set(names)
    chunks = []
    async with svc.db.engine.connect() as conn:
        # every table, not only the mapped ones (alembic's too)
        rows = await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"))
        tables = sorted({r[0] for r in rows} | set(names))
        for table in tables:
            result = await conn.execute(text(f'SELECT row_to_json(t)::text FROM "{table}" t'))  # noqa: S608
            chunks.extend(f"{table}: {row[0]}" for row in result)
    return "\n".join(chunks)


async def test_no_clear_id_number_in_the_database_or_the_logs(client, svc, settings, caplog, log_stream, monkeypatch):
    caplog.set_level(logging.DEBUG)
    librarian = await exercise(client, svc)

    # What the code itself logs, before any filter: caplog's handler formats records as they come.
    assert caplog.records, "nothing was logged at all: the capture is not working"
    assert any(r.name == "twincity.http" for r in caplog.records)
    assert_text_clean("the captured log records", caplog.text)

    # The last line of defence: an unexpected error carrying a number is masked in the service's log.
    async def explode(*args, **kwargs):
        raise RuntimeError(f"unexpected trouble with {NUMBERS[0]}")

    monkeypatch.setattr(service, "crossref", explode)
    resp = await client.post(
        "/api/v1/identity/crossrefs",
        json={"identifier": ident("id_number", NUMBERS[0]), "target_type": "local"},
        headers=librarian,
    )
    assert resp.status == 500
    assert_text_clean("the 500 response", await resp.text())

    output = log_stream.getvalue()
    assert '"logger": "twincity.http"' in output and "unhandled error" in output
    assert NUMBERS[0][:6] + "********" + NUMBERS[0][-4:] in output  # it was there, masked
    assert_text_clean("the service's log output", output)
    for line in output.splitlines():
        json.loads(line)  # one JSON object a line, so nothing unmasked hides in a continuation line

    if svc.db.is_sqlite:
        path = Path(make_url(settings.effective_database_url).database)
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        # as they are while the service runs (recent pages live in the WAL) ...
        before = assert_files_clean(files)
        # ... and after the WAL is copied back into the database file
        await svc.db.dispose()
        checkpoint(path)
        after = assert_files_clean(files)
        for data in (before, after):
            assert "居民0".encode() in data  # the search does see the stored text
    else:
        dump = await _dump_postgres(svc)
        assert "居民0" in dump and "identity.register" in dump
        assert_text_clean("the PostgreSQL tables", dump)

    # whatever else the service keeps in its data directory
    assert_files_clean([Path(settings.data_dir)], recursive=True)
