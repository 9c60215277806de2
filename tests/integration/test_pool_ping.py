"""Pooled PostgreSQL connections: a connection that sat idle in the pool is checked before use; one in steady
use is not (a ping at every checkout is a round trip on every request).

A server restart, or a connection the server ended while it idled, must not reach a request as an error.
"""

from __future__ import annotations

import pytest
from sqlalchemy import text

from federation import db as dbmod
from federation.db import Database
from tests.conftest import TEST_DB_URL

pytestmark = [
    pytest.mark.db,
    pytest.mark.skipif(not TEST_DB_URL or not TEST_DB_URL.startswith("postgresql"), reason="PostgreSQL's pool"),
]

PID = text("SELECT pg_backend_pid()")


def _pings(db: Database) -> list[int]:
    """Counts the dialect's pings (asyncpg's travel outside ``before_cursor_execute``)."""
    counted: list[int] = []
    real = db.engine.sync_engine.dialect.do_ping

    def counting(dbapi_conn):  # noqa: ANN001, ANN202
        counted.append(1)
        return real(dbapi_conn)

    db.engine.sync_engine.dialect.do_ping = counting  # type: ignore[method-assign]
    return counted


async def _terminate(db: Database, pid: int) -> None:
    other = Database(db.url, pool=False)
    try:
        async with other.engine.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        await other.dispose()


async def test_a_busy_connection_is_not_pinged_an_idle_one_is(monkeypatch: pytest.MonkeyPatch) -> None:
    db = Database(TEST_DB_URL)
    try:
        pings = _pings(db)
        for _ in range(5):
            assert (await db.read_once(PID))[0][0]
        assert pings == []  # reused at once: no round trip before the statement

        monkeypatch.setattr(dbmod, "PING_AFTER_IDLE_S", 0.0)  # every connection counts as idle now
        await db.read_once(PID)
        assert pings == [1]
    finally:
        await db.dispose()


async def test_a_connection_the_server_ended_while_it_idled_is_replaced_unseen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = Database(TEST_DB_URL)
    try:
        first = (await db.read_once(PID))[0][0]
        await _terminate(db, first)  # as a server restart or an idle timeout would
        monkeypatch.setattr(dbmod, "PING_AFTER_IDLE_S", 0.0)
        second = (await db.read_once(PID))[0][0]  # no error reaches the caller
        assert second != first
        async with db.reader() as s:
            assert (await s.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await db.dispose()
