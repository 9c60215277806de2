"""A big catalogue load on PostgreSQL leaves the tables it filled analysed: the plans of the first check-ins after
it do not wait for autovacuum. A small load, and any load on SQLite, leaves the statistics alone."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import text

from library.catalog import tasks
from tests.fixtures import marc_corpus as mc

TABLES = [t.name for t in tasks._LOADED]


async def _manual_analyses(url: str) -> dict[str, int]:
    """How often each loaded table was analysed by hand (autovacuum counts apart), read in a new session."""
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch(
            "SELECT relname, analyze_count FROM pg_stat_user_tables WHERE relname = ANY($1::text[])", TABLES
        )
        return {r["relname"]: r["analyze_count"] for r in rows}
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return mc.write_corpus(tmp_path_factory.mktemp("corpus"))


async def test_a_big_load_analyses_the_tables_it_filled_a_small_one_does_not(svc, corpus, monkeypatch) -> None:
    path = corpus["marc21_utf8.mrc"]
    if svc.db.is_sqlite:
        await tasks.ingest_file(svc, path, library="CQL", holdings="marc21_952", actor="test")
        async with svc.db.reader() as s:  # SQLite's planner keeps its heuristics: no statistics table is made
            assert (await s.execute(text("SELECT name FROM sqlite_master WHERE name = 'sqlite_stat1'"))).all() == []
        return
    before = await _manual_analyses(svc.db.url)
    report = await tasks.ingest_file(svc, path, library="CQL", holdings="marc21_952", actor="test")
    assert 0 < report.added < tasks.ANALYSE_AFTER
    assert await _manual_analyses(svc.db.url) == before  # a small load: autovacuum's business

    monkeypatch.setattr(tasks, "ANALYSE_AFTER", 1)
    report = await tasks.ingest_file(svc, corpus["unimarc_gbk.mrc"], library="SCL", holdings="cnmarc_905", actor="test")
    assert report.added >= 1
    after = await _manual_analyses(svc.db.url)
    assert set(after) == set(TABLES)
    assert all(after[t] == before.get(t, 0) + 1 for t in TABLES), (before, after)
