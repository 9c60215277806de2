"""The one-trip SQLite cursor: what SQLAlchemy reads from a cursor is right, errors arrive as the DBAPI's, and a
statement is one trip to the connection's thread."""

from __future__ import annotations

from pathlib import Path

import aiosqlite.core
import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, exc, func, insert, select, text, update

from federation.db import Database
from federation.sqlite_driver import OneTripCursor

meta = MetaData()
things = Table(
    "things",
    meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(20), unique=True),
)


@pytest.fixture
async def db(tmp_path: Path):
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'd.db'}")
    async with database.engine.begin() as conn:
        await conn.run_sync(meta.create_all)
    yield database
    await database.dispose()


async def test_rows_rowcount_and_lastrowid_are_what_sqlite_reports(db):
    async with db.engine.begin() as conn:
        first = await conn.execute(insert(things).values(name="a"))
        second = await conn.execute(insert(things).values(name="b"))
        assert (first.inserted_primary_key[0], second.inserted_primary_key[0]) == (1, 2)
        many = await conn.execute(insert(things), [{"name": n} for n in "cdef"])
        assert many.rowcount == 4
        changed = await conn.execute(update(things).where(things.c.id > 2).values(name=func.upper(things.c.name)))
        assert changed.rowcount == 4
        rows = (await conn.execute(select(things.c.id, things.c.name).order_by(things.c.id))).all()
        assert rows == [(1, "a"), (2, "b"), (3, "C"), (4, "D"), (5, "E"), (6, "F")]
        assert (await conn.execute(text("SELECT count(*) FROM things WHERE name = 'zz'"))).scalar_one() == 0
        cursor = (await conn.exec_driver_sql("DELETE FROM things WHERE id = 6")).cursor
        assert cursor is None or cursor.description is None


async def test_a_large_result_and_partial_fetches_lose_no_row(db):
    async with db.engine.begin() as conn:
        await conn.execute(insert(things), [{"name": f"n{i}"} for i in range(5000)])
    async with db.reader() as s:
        result = await s.execute(select(things.c.id).order_by(things.c.id))
        head = result.fetchmany(7)
        rest = result.all()
    assert [r.id for r in head + rest] == list(range(1, 5001))


async def test_errors_are_the_dbapi_errors_sqlalchemy_maps(db):
    async with db.engine.begin() as conn:
        await conn.execute(insert(things).values(name="a"))
    with pytest.raises(exc.IntegrityError):
        async with db.engine.begin() as conn:
            await conn.execute(insert(things).values(name="a"))
    with pytest.raises(exc.OperationalError):
        async with db.engine.connect() as conn:
            await conn.execute(text("SELECT nothing FROM nowhere"))
    async with db.reader() as s:  # the connection that failed is usable again
        assert (await s.execute(select(func.count()).select_from(things))).scalar_one() == 1


async def test_a_statement_is_one_trip_to_the_connection_thread(db, monkeypatch):
    trips = 0
    original = aiosqlite.core.Connection._execute

    async def counted(self, fn, *args, **kwargs):
        nonlocal trips
        trips += 1
        return await original(self, fn, *args, **kwargs)

    async with db.reader() as s:  # a pooled connection, opened and set up
        await s.execute(text("SELECT 1"))
    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    async with db.reader() as s:
        pooled = await (await s.connection()).get_raw_connection()
        assert isinstance(pooled.dbapi_connection.cursor(), OneTripCursor)  # the engine runs on this driver
        for _ in range(5):
            await s.execute(select(things.c.id).where(things.c.name == "x"))
    # BEGIN, five statements, ROLLBACK; the pool's reset of an idle connection makes none. The stock adapter made
    # four a statement (open a cursor, execute, fetch, close) and one for the reset: 24
    assert trips == 1 + 5 + 1


async def test_a_connection_given_back_inside_a_transaction_is_still_rolled_back(db):
    conn = await db.engine.connect()
    await conn.execute(insert(things).values(name="never"))
    raw = (await conn.get_raw_connection()).dbapi_connection
    await conn.close()  # no commit
    assert not raw._connection._connection.in_transaction
    async with db.reader() as s:
        assert (await s.execute(select(func.count()).select_from(things))).scalar_one() == 0
