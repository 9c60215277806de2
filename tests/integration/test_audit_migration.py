"""Migrating a trail written as one chain: its entries become chain 0 at their own places, verify unchanged, and
new entries follow them; the database still refuses edits and deletions.

SQLite always; PostgreSQL too with TWINCITY_TEST_DATABASE_URL, in a database of its own made for the test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from federation.audit.models import AuditEntry
from federation.audit.service import Record, verify
from federation.extensions import build_services
from federation.migrate import upgrade
from tests.conftest import make_settings

PG_URL = os.environ.get("TWINCITY_TEST_DATABASE_URL")
pytestmark = pytest.mark.db  # its own databases, not the db_url fixture's: marked for CI's PostgreSQL run by hand


@pytest.fixture(params=["sqlite", "postgresql"])
async def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
        return
    if not PG_URL:
        pytest.skip("TWINCITY_TEST_DATABASE_URL is not set")
    name = f"tc_migration_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(PG_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
        await admin.dispose()


def sealed_as_one_chain(key: bytes, seq: int, prev: str, at: dt.datetime) -> dict:
    """An entry as the single chain's code wrote it: its seal names its place as "seq", and no chain."""
    fields = {
        "seq": seq,
        "at": at.isoformat(timespec="microseconds"),
        "actor": "staff:librarian@CQL",
        "actor_institution": "CQL",
        "action": "circulation.checkout",
        "subject_person_id": None,
        "purpose": None,
        "outcome": "ok",
        "client_address": None,
        "details": {"n": seq},
        "prev_hash": prev,
    }
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return {
        **fields,
        "details": json.dumps(fields["details"]),
        "hash": hmac.new(key, canonical, hashlib.sha256).hexdigest(),
    }


async def test_a_single_chain_trail_migrates_and_goes_on(fresh_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, database_url=fresh_url)
    upgrade(fresh_url, "0012")
    svc = build_services(settings)
    try:
        at = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)
        prev, rows = "0" * 64, []
        for seq in range(1, 6):
            row = sealed_as_one_chain(svc.audit_key.key, seq, prev, at + dt.timedelta(seconds=seq))
            rows.append(row)
            prev = row["hash"]
        async with svc.db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO audit_entries (seq, at, actor, actor_institution, action, subject_person_id,"
                    " purpose, outcome, client_address, details, prev_hash, hash) VALUES (:seq, :at, :actor,"
                    " :actor_institution, :action, :subject_person_id, :purpose, :outcome, :client_address,"
                    " :details, :prev_hash, :hash)"
                ),
                [{**r, "at": at + dt.timedelta(seconds=r["seq"])} for r in rows],
            )
        await svc.db.engine.dispose()

        upgrade(fresh_url)

        async with svc.db.reader() as s:
            result = await verify(s, svc.audit_key)
            migrated = list((await s.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars())
        assert (result.ok, result.checked) == (True, 5)
        assert [(e.seq, e.chain, e.link) for e in migrated] == [(i, 0, i) for i in range(1, 6)]
        assert [(h.chain, h.link, h.hash) for h in result.heads] == [(0, 5, prev)]

        async with svc.db.uow() as uow:
            await svc.audit(uow, Record(action="test.after", actor="staff:tester@CQL"))
            await uow.commit()
        async with svc.db.reader() as s:
            result = await verify(s, svc.audit_key)
            new = (await s.execute(select(AuditEntry).where(AuditEntry.action == "test.after"))).scalar_one()
        assert (result.ok, result.checked) == (True, 6)
        assert new.seq == 6  # the database's numbering goes on after the migrated entries
        if new.chain == 0:
            assert (new.link, new.prev_hash) == (6, prev)
        else:
            assert (new.link, new.prev_hash) == (1, "0" * 64)

        for sql in ("UPDATE audit_entries SET actor = 'x' WHERE seq = 2", "DELETE FROM audit_entries WHERE seq = 2"):
            with pytest.raises(DBAPIError, match="append-only"):
                async with svc.db.engine.begin() as conn:
                    await conn.execute(text(sql))
    finally:
        await svc.close()
