"""``twincity catalog ...`` and the demo catalogue, run as real processes on SQLite in a temporary data directory.

One world per module: ``db upgrade`` and ``demo load`` (twice) once; the tests then load, search and reindex
in it, in file order.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from library.catalog import demo as demo_catalogue
from tests.fixtures import marc_corpus as mc

TIMEOUT = 300
DEMO_LOAD_BUDGET_S = 60  # ~20 s on a laptop (the catalogue part ~10 s); generous for a loaded CI machine


def twincity() -> list[str]:
    script = Path(sys.executable).with_name("twincity")
    return [str(script)] if script.exists() else [sys.executable, "-m", "federation.cli"]


def run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # nothing from the caller's environment chooses the database: SQLite in data_dir, always
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINCITY_")}
    env.update(TWINCITY_DATA_DIR=str(data_dir), TWINCITY_LOG_JSON="false", PYTHONIOENCODING="utf-8")
    return subprocess.run(  # noqa: S603 - our own console script
        [*twincity(), *args], capture_output=True, text=True, env=env, cwd=data_dir.parent, timeout=TIMEOUT
    )


def ok(out: subprocess.CompletedProcess[str]) -> str:
    assert out.returncode == 0, f"exit {out.returncode}\nstdout: {out.stdout}\nstderr: {out.stderr[-3000:]}"
    return out.stdout


@dataclass
class World:
    data_dir: Path
    first: subprocess.CompletedProcess[str]
    first_s: float
    second: subprocess.CompletedProcess[str]
    corpus: dict[str, Path]

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data_dir / "twincity.db")

    def scalar(self, sql: str) -> int:
        with self.db() as conn:
            return conn.execute(sql).fetchone()[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("catalog-cli")
    data_dir = root / "var"
    ok(run(data_dir, "db", "upgrade"))
    started = time.monotonic()
    first = run(data_dir, "demo", "load")
    first_s = time.monotonic() - started
    second = run(data_dir, "demo", "load")
    return World(data_dir, first, first_s, second, mc.write_corpus(root / "corpus"))


# --------------------------------------------------------------------------- the demo catalogue


def test_demo_load_loads_the_demo_catalogue(world: World) -> None:
    out = ok(world.first)
    expected = sum(len(b.holders) for b in demo_catalogue.works())
    assert f"{expected} new catalogue records" in out, out
    assert world.first_s < DEMO_LOAD_BUDGET_S, f"demo load took {world.first_s:.1f}s"
    per_library = dict(world.db().execute("SELECT library, count(*) FROM catalog_records GROUP BY library"))
    assert set(per_library) == {"CQL", "SCL", "CDL"}
    assert all(n >= demo_catalogue.PER_LIBRARY for n in per_library.values()), per_library
    dialects = dict(
        world.db().execute("SELECT library, group_concat(DISTINCT dialect) FROM catalog_records GROUP BY 1")
    )
    assert dialects == {"CQL": "marc21", "SCL": "unimarc", "CDL": "marc21"}
    # the exports it loaded are in the data directory, as a member would send them
    assert sorted(p.name for p in (world.data_dir / "demo" / "catalog").iterdir()) == [
        "CDL.mrc",
        "CQL.mrc",
        "SCL.cnmarc",
    ]


def test_a_second_demo_load_adds_nothing(world: World) -> None:
    out = ok(world.second)
    assert "0 new catalogue records" in out, out
    assert "0 new persons, 0 new accounts, 0 new consents" in out  # the core's world is still loaded first
    records = sum(len(b.holders) for b in demo_catalogue.works())
    assert world.scalar("SELECT count(*) FROM catalog_records") == records
    assert world.scalar("SELECT count(*) FROM catalog_works") == len(demo_catalogue.works())


def test_demo_works_cluster_across_libraries_with_copies_at_service_points(world: World) -> None:
    with world.db() as conn:
        spread = dict(
            conn.execute(
                "SELECT n, count(*) FROM (SELECT count(DISTINCT library) AS n FROM catalog_records GROUP BY work_id) "
                "GROUP BY n"
            )
        )
        locations = {r[0] for r in conn.execute("SELECT DISTINCT location FROM catalog_items")}
        statuses = dict(conn.execute("SELECT status, count(*) FROM catalog_items GROUP BY status"))
        no_call_number = conn.execute("SELECT count(*) FROM catalog_items WHERE call_number IS NULL").fetchone()[0]
    assert spread[2] > 1000 and spread[3] > 200, spread  # shared ISBNs made works of two and three libraries
    assert locations == {f"{lib}-{sp}" for lib in ("CQL", "SCL", "CDL") for sp in ("MAIN", "B1")}
    assert statuses["available"] > 0.8 * sum(statuses.values()) and statuses["on_loan"] > 0, statuses
    assert no_call_number == 0


# --------------------------------------------------------------------------- catalog ingest

SUMMARY = re.compile(
    r"^(?P<path>\S+): (?P<added>\d+) added, (?P<updated>\d+) updated, (?P<unchanged>\d+) unchanged, "
    r"(?P<rejected>\d+) rejected, (?P<rate>[\d,]+) records/s$",
    re.MULTILINE,
)


def summaries(stdout: str) -> dict[str, dict[str, int]]:
    return {
        Path(m["path"]).name: {k: int(m[k]) for k in ("added", "updated", "unchanged", "rejected")}
        for m in SUMMARY.finditer(stdout)
    }


def test_ingest_prints_a_summary_and_each_rejection(world: World) -> None:
    broken = world.corpus["broken_truncated_middle.mrc"]
    good = world.corpus["marc21_utf8.mrc"]
    out = ok(run(world.data_dir, "catalog", "ingest", str(broken), str(good), "--library", "CQL",
                 "--holdings", "marc21_952"))  # fmt: skip
    got = summaries(out)
    # the broken file: A and C load, B (truncated) is rejected; then the good file adds B and 西游记
    assert got == {
        broken.name: {"added": 2, "updated": 0, "unchanged": 0, "rejected": 1},
        good.name: {"added": 2, "updated": 0, "unchanged": 2, "rejected": 0},
    }, out
    offset = len(mc.good_records()[0])
    assert re.search(rf"^  rejected record #1 at byte {offset}: truncated record: .+$", out, re.MULTILINE), out

    again = ok(run(world.data_dir, "catalog", "ingest", str(good), "--library", "cql", "--holdings", "marc21_952"))
    assert summaries(again) == {good.name: {"added": 0, "updated": 0, "unchanged": 4, "rejected": 0}}, again


def test_ingest_of_a_cnmarc_file_with_a_report(world: World, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    path = str(world.corpus["unimarc_gb18030.mrc"])
    options = ("--format", "unimarc", "--encoding", "gb18030", "--holdings", "cnmarc_995", "--report", str(report))
    out = ok(run(world.data_dir, "catalog", "ingest", path, "--library", "SCL", *options))
    assert summaries(out) == {"unimarc_gb18030.mrc": {"added": 4, "updated": 0, "unchanged": 0, "rejected": 0}}
    (full,) = json.loads(report.read_text()).values()
    assert full["added"] == 4 and full["rejections"] == [] and full["records_per_second"] > 0


def test_ingest_refuses_an_unknown_library_or_layout(world: World) -> None:
    path = str(world.corpus["marc21_utf8.mrc"])
    unknown = run(world.data_dir, "catalog", "ingest", path, "--library", "NOPE")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr, unknown.stderr
    assert "NOPE" in unknown.stderr
    layout = run(world.data_dir, "catalog", "ingest", path, "--library", "CQL", "--holdings", "marc21-999")
    assert layout.returncode == 2 and "marc21_952" in layout.stderr, layout.stderr
    fmt = run(world.data_dir, "catalog", "ingest", path, "--library", "CQL", "--format", "marc99")
    assert fmt.returncode == 2 and "marc99" in fmt.stderr


def test_commands_on_a_database_never_migrated_say_so_in_a_line(world: World, tmp_path: Path) -> None:
    fresh = tmp_path / "var"
    for args in (("ingest", str(world.corpus["marc21_utf8.mrc"]), "--library", "CQL"), ("reindex",)):
        out = run(fresh, "catalog", *args)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert "has `twincity db upgrade` been run?" in out.stderr, out.stderr


# --------------------------------------------------------------------------- catalog search and reindex

HIT_KEYS = {"id", "score", "title", "authors", "year", "publisher", "isbns", "libraries", "available_at", "highlights"}


def search_json(world: World, *args: str) -> dict:
    return json.loads(ok(run(world.data_dir, "catalog", "search", *args, "--json")))


def test_search_prints_the_api_result_objects(world: World) -> None:
    from library.catalog.api import WorkHit

    assert set(WorkHit.model_fields) == HIT_KEYS
    body = search_json(world, "红楼梦")
    assert body["total"] >= 1
    hit = body["items"][0]
    assert set(hit) == HIT_KEYS
    assert hit["title"] == "红楼梦" and "曹雪芹" in hit["authors"]
    assert set(hit["libraries"]) == {"CQL", "SCL", "CDL"}  # the demo's three, and the CQL upload joined them
    assert "9787020002207" in hit["isbns"]

    only_scl = search_json(world, "三体", "--library", "SCL", "--limit", "1")
    assert len(only_scl["items"]) == 1 and "SCL" in only_scl["items"][0]["libraries"]

    text = ok(run(world.data_dir, "catalog", "search", "cien anos"))
    assert text.splitlines()[0].endswith("works")
    assert "Cien años de soledad / García Márquez, Gabriel (1987)" in text and "CQL" in text


def test_search_refuses_a_bad_query_in_a_sentence(world: World) -> None:
    out = run(world.data_dir, "catalog", "search", "x " * 1500)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "query too long" in out.stderr


def test_search_answers_beside_a_running_server_and_reindex_says_why_it_cannot(world: World) -> None:
    """The server holds the embedded index's only writer; the command reads beside it instead of failing to lock."""
    from library.catalog import indexing
    from search.tantivy_engine import TantivyEngine

    async def hold(commands: list[tuple[str, ...]]) -> list[subprocess.CompletedProcess[str]]:
        server = TantivyEngine(world.data_dir / "search")
        await server.open(indexing.INDEX, indexing.SCHEMA)  # the writer, as `twincity run` holds it
        try:
            return [await asyncio.to_thread(run, world.data_dir, *c) for c in commands]
        finally:
            await server.close()

    found, reindex = asyncio.run(hold([("catalog", "search", "红楼梦", "--json"), ("catalog", "reindex")]))
    body = json.loads(ok(found))
    assert body["items"][0]["title"] == "红楼梦"
    assert reindex.returncode == 1 and "Traceback" not in reindex.stderr, reindex.stderr
    assert "being written by a running server" in reindex.stderr


def test_reindex_rebuilds_and_searches_still_answer(world: World) -> None:
    out = ok(run(world.data_dir, "catalog", "reindex"))
    m = re.search(r"^(\d+) works indexed$", out, re.MULTILINE)
    assert m, out
    assert int(m[1]) == world.scalar("SELECT count(DISTINCT work_id) FROM catalog_records WHERE NOT deleted")
    body = search_json(world, "三体")
    assert body["items"][0]["title"] == "三体"
    assert search_json(world, "Jane Eyre")["items"][0]["title"] == "Jane Eyre"


# --------------------------------------------------------------------------- help


@pytest.mark.parametrize(
    "args",
    [("catalog",), ("catalog", "ingest"), ("catalog", "search"), ("catalog", "reindex"), ("demo", "load")],
    ids=" ".join,
)
def test_help(tmp_path: Path, args: tuple[str, ...]) -> None:
    out = ok(run(tmp_path / "var", *args, "--help"))
    assert out.startswith("Usage: ") and " ".join(args) in out.splitlines()[0]
    if args == ("catalog", "ingest"):
        for option in ("--library", "--format", "--encoding", "--holdings", "--report"):
            assert option in out
