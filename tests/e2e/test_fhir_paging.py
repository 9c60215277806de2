"""Paging as a standard FHIR client pages: follow the Bundle's absolute ``next`` links to the last page (and
``previous`` back to the first), and see every matching resource exactly once, whatever the ties and gaps in the
sort key, in either direction, while ``total`` stays the same."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from federation.demo import RESIDENTS
from tests import fhir_support as fx
from tests.conftest import token_for

N = 1234
START = dt.datetime(2023, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
async def many(demo):
    """1,234 Observations for one patient, written in one bulk insert: effective times in runs of seven equal
    values (ties broken by id), 34 without an effective time; last_updated all equal but for a few."""
    svc = demo
    person = await fx.person_of(svc, RESIDENTS[0].id_number)
    hospitals = [await fx.institution(svc, code) for code in ("CQH1", "SCH1", "SCH2")]
    rows = []
    for i in range(N):
        at = START + dt.timedelta(hours=i // 7)
        row = fx.observation(person, hospitals[i % 3], at, value=float(i), updated=START + dt.timedelta(days=i % 3))
        if i % 37 == 0:
            row["effective_at"] = None
        rows.append(row)
    await fx.store(svc, rows)
    return {"svc": svc, "person": person, "ids": [r["id"] for r in rows], "rows": rows}


async def walk(session, url: str, headers: dict, rel: str = "next") -> tuple[list[str], list[dict]]:
    """Follow ``rel`` links from ``url`` as given (absolute), collecting match ids in order."""
    seen, bundles = [], []
    while url:
        async with session.get(url, headers=headers) as resp:
            text = await resp.text()
            assert resp.status == 200, text
            assert resp.content_type == "application/fhir+json"
        bundle = json.loads(text)
        bundles.append(bundle)
        seen += [e["resource"]["id"] for e in bundle.get("entry", ())]
        url = next((link["url"] for link in bundle["link"] if link["relation"] == rel), None)
        assert len(bundles) <= N, "the links go round in circles"
    return seen, bundles


@pytest.mark.parametrize("sort", ["-date", "date", "_lastUpdated", "-_lastUpdated"])
async def test_next_links_reach_every_result_exactly_once(client, many, sort):
    headers = await token_for(client, "doctor@SCH1")
    first = client.make_url(f"/fhir/Observation?patient=Patient/{many['person']}&_count=50&_sort={sort}")
    seen, bundles = await walk(client.session, str(first), headers)
    assert len(seen) == N and set(seen) == set(many["ids"])
    assert len(bundles) == (N + 49) // 50
    assert all(b["total"] == N for b in bundles)
    assert all(len(b["entry"]) == 50 for b in bundles[:-1])
    for b in bundles:
        links = {link["relation"]: link["url"] for link in b["link"]}
        assert all(url.startswith("http://") for url in links.values())
        assert links["first"] == bundles[0]["link"][0]["url"]
        assert ("previous" in links) == (b is not bundles[0])
    assert "next" not in {link["relation"] for link in bundles[-1]["link"]}

    # the order is the one asked for: nulls last, ties by id
    by_id = {r["id"]: r for r in many["rows"]}
    column = "effective_at" if sort.lstrip("-") == "date" else "last_updated"
    keys = [(by_id[i][column] is None, by_id[i][column]) for i in seen]
    present = [k[1] for k in keys if not k[0]]
    assert present == sorted(present, reverse=sort.startswith("-"))
    assert all(k[0] for k in keys[len(present) :])

    # and back again from the last page, through previous links
    last = next(link["url"] for link in bundles[-1]["link"] if link["relation"] == "self")
    back, _ = await walk(client.session, last, headers, rel="previous")
    pages = [[e["resource"]["id"] for e in b["entry"]] for b in reversed(bundles)]
    assert back == [i for page in pages for i in page]


async def test_paging_with_a_filter_and_small_pages(client, many):
    headers = await token_for(client, "doctor@SCH1")
    q = f"/fhir/Observation?patient={many['person']}&date=ge2023-01-10&date=lt2023-02&_count=7&_sort=date"
    seen, bundles = await walk(client.session, str(client.make_url(q)), headers)
    lo = dt.datetime(2023, 1, 10, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    hi = dt.datetime(2023, 2, 1, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    expected = {r["id"] for r in many["rows"] if r["effective_at"] is not None and lo <= r["effective_at"] < hi}
    assert len(seen) == len(expected) == bundles[0]["total"] and set(seen) == expected


async def test_new_results_during_paging_do_not_repeat_or_skip_old_ones(client, many):
    """Keyset pages: rows added ahead of the cursor while a client pages do not shift the pages it has yet to
    read (OFFSET paging would repeat one row for each added)."""
    headers = await token_for(client, "doctor@SCH1")
    url = str(client.make_url(f"/fhir/Observation?patient={many['person']}&_count=100"))
    async with client.session.get(url, headers=headers) as resp:
        page = json.loads(await resp.text())
    seen = [e["resource"]["id"] for e in page["entry"]]
    cqh1 = await fx.institution(many["svc"], "CQH1")
    newer = [fx.observation(many["person"], cqh1, dt.datetime(2030, 1, 1, tzinfo=dt.UTC)) for _ in range(5)]
    await fx.store(many["svc"], newer)
    nxt = next(link["url"] for link in page["link"] if link["relation"] == "next")
    rest, bundles = await walk(client.session, nxt, headers)
    assert set(seen).isdisjoint(rest) and set(seen) | set(rest) == set(many["ids"])
    assert bundles[0]["total"] == N + 5


async def test_a_page_costs_the_same_statements_whatever_its_size(client, many):
    """No per-row queries: the statements one search runs do not grow with ``_count``."""
    from sqlalchemy import event

    svc = many["svc"]
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    engines = {svc.db.engine.sync_engine, svc.db.read_engine.sync_engine}
    for engine in engines:
        event.listen(engine, "before_cursor_execute", count)
    try:
        headers = await token_for(client, "doctor@SCH1")
        sizes = {}
        for n in (1, 5, 200):  # the first loads the recognition catalogue, once per process
            statements.clear()
            resp = await client.get(f"/fhir/Observation?patient={many['person']}&_count={n}", headers=headers)
            assert resp.status == 200
            assert len((await resp.json(content_type=None))["entry"]) == n
            # left out: the app's background work (outbox relay, job polling) and the recognition catalogue's
            # snapshot, loaded again whenever its generation moves (once per change, never per row)
            background = r"\b(outbox|jobs|health_\w+|institutions)\b"
            ours = [s for s in statements if not re.search(background, s) and not s.startswith("BEGIN")]
            sizes[n] = len(ours)
            reads = [s for s in statements if "FROM fhir_resources" in s]
            assert len(reads) == 1, reads  # the page, its COUNT and the merge check in one statement
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", count)
    assert sizes[5] == sizes[200]
