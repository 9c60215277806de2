"""Circulation's per-process copy of its rules: a write in this process is seen at once, however it is made; a
write from another process within ``cache.TTL_S``."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import create_engine, text

from library.circulation import cache, policies
from library.circulation.models import LoanPolicy


async def rule_days(svc) -> int:
    async with svc.db.reader() as s:
        return (await policies.resolve(s, "CQL", "adult", "book")).loan_days


async def test_a_write_in_this_process_is_seen_at_once(demo):
    before = await rule_days(demo)
    async with demo.db.uow() as uow:  # through the ORM
        uow.session.add(LoanPolicy(library="CQL", reader_category="*", item_type="book", loan_days=11, max_renewals=0))
        await uow.commit()
    assert before != 11 and await rule_days(demo) == 11
    async with demo.db.engine.begin() as conn:  # raw SQL on the engine, no session
        await conn.execute(text("UPDATE circ_loan_policies SET loan_days = 12 WHERE library = 'CQL'"))
    assert await rule_days(demo) == 12


async def test_a_rolled_back_write_is_not_kept(demo):
    before = await rule_days(demo)
    async with demo.db.uow() as uow:
        uow.session.add(LoanPolicy(library="CQL", reader_category="*", item_type="book", loan_days=13, max_renewals=0))
        await uow.session.flush()
        assert (await policies.resolve(uow.session, "CQL", "adult", "book")).loan_days == 13  # its own change
        assert await rule_days(demo) == before  # not shared before it commits
    assert await rule_days(demo) == before  # rolled back


async def test_another_process_write_is_seen_within_the_bound(demo, settings, monkeypatch):
    if not settings.is_sqlite:
        pytest.skip("another process is played by a second driver on the SQLite file")
    before = await rule_days(demo)
    path = settings.effective_database_url.split("///", 1)[1]
    with sqlite3.connect(path) as conn:  # not through any engine of this process: nothing tells the cache
        conn.execute(
            "INSERT INTO circ_loan_policies (id, library, reader_category, item_type, loan_days, max_renewals, "
            "can_request) VALUES ('p1', 'CQL', '*', 'book', 17, 0, 1)"
        )
    assert await rule_days(demo) == before  # still the copy...
    monkeypatch.setattr(cache, "TTL_S", 0.0)  # ...until it expires (TTL_S after it was loaded)
    assert await rule_days(demo) == 17


def test_a_transaction_whose_connection_was_invalidated_rolls_back_and_drops_the_copies():
    """A statement cancelled mid-flight invalidates its connection; the rollback that follows must still end (it
    once raised from the cache's listener) and, not knowing what was written, drop this process's copies."""
    cache._listen()
    engine = create_engine("sqlite://")
    with engine.connect() as conn:
        conn.execute(text("CREATE TABLE service_points (code TEXT)"))
        conn.commit()
        conn.execute(text("SELECT 1"))  # a transaction that has not written to a cached table
        conn.invalidate()
        before = cache.generation()
        conn.rollback()
    assert cache.generation() > before


def test_which_statements_touch_the_copies_and_which_texts_are_kept() -> None:
    cache._writes_cached_table.cache_clear()
    write = "UPDATE circ_loan_policies SET loan_days=? WHERE circ_loan_policies.id = ?"
    assert cache._touches_cached(write) and cache._touches_cached("  insert into service_points (code) values (?)")
    assert not cache._touches_cached("SELECT * FROM circ_loan_policies")  # a read
    assert not cache._touches_cached("UPDATE institutions_archive SET code = ? WHERE id = ?")  # another table
    many = "INSERT INTO circ_closed_days (library, day) VALUES " + ", ".join(["(?, ?)"] * 2000)
    assert cache._touches_cached(many)
    assert not cache._touches_cached("INSERT INTO circulation_loans (id) VALUES " + ", ".join(["(?)"] * 2000))
    # only the short texts of write statements are kept, so reads and long INSERTs cannot crowd the cache out
    assert cache._writes_cached_table.cache_info().currsize == 3
