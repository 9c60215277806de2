"""The cost of a checkout, pinned: the SQL statements one checkout sends, counted at the driver.

A checkout's latency under load is mostly its round trips and the time the audit chain's lock is held; this test
keeps the count from silently growing back. The second checkout of a reader is the steady state (the first use at a
library also creates the reader record). The count must not depend on the loans the reader already holds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy import event

from federation.demo import RESIDENTS
from federation.jobs import runner
from library.circulation import cache, policies
from tests.circulation_support import add_copies
from tests.conftest import token_for

# the steady-state checkout (known reader, a copy that circulated before, no request on it), with the request's
# authentication: 11 on SQLite (its BEGIN counts) and 6 on PostgreSQL (its audit lock counts, and carries the outbox
# rows), where the copy's move, the catalogue's status, the two counters and the loan are one statement; it was 29
# and 33, then 15 and 14 before the credential and its person were read in one statement and the caller's account
# without a transaction, then 12, then 12 and 8 before the credential's person and their standing were read in one
# statement and the outbox rows written with the audit chain's lock
MAX_STATEMENTS = {"sqlite": 11, "postgresql": 6}


@contextlib.contextmanager
def counting(svc) -> Iterator[list[str]]:
    """Every statement sent through the service's engines while the block runs, but the background runner's
    (SQLite's BEGIN counts; a COMMIT and PostgreSQL's BEGIN are not cursor statements)."""
    seen: list[str] = []

    def on_execute(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if runner.IN_BACKGROUND.get():
            return  # the background relay (indexing, notices), in its task or one it started, is not the checkout's
        seen.append(statement.split(None, 1)[0].upper() + " " + statement.replace("\n", " ")[:160])

    engines = {id(e): e for e in (svc.db.engine, svc.db.read_engine)}.values()
    for e in engines:
        event.listen(e.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        for e in engines:
            event.remove(e.sync_engine, "before_cursor_execute", on_execute)


def _body(barcode: str, card: str) -> dict:
    return {
        "item_barcode": barcode,
        "credential": {"type": "social_security_card", "value": card},
        "service_point": "CQL-MAIN",
    }


async def test_a_checkout_sends_a_bounded_number_of_statements(client, demo, monkeypatch):
    # the rules' copy expires every cache.TTL_S (six statements, once per process, not per checkout): kept here so
    # a slow run does not count a reload
    monkeypatch.setattr(cache, "TTL_S", 3600.0)
    codes = [f"STMT-{i:03d}" for i in range(30)]
    await add_copies(demo, "CQL", codes)
    async with demo.db.uow() as uow:
        await policies.set_federation(uow.session, max_total_loans=100)
        await uow.commit()
    headers = await token_for(client, "librarian@CQL")
    card = RESIDENTS[0].ss_card
    resp = await client.post("/api/v1/circulation/checkouts", json=_body(codes[0], card), headers=headers)
    assert resp.status == 201, await resp.text()

    async def measured(barcode: str) -> list[str]:
        with counting(demo) as seen:
            r = await client.post("/api/v1/circulation/checkouts", json=_body(barcode, card), headers=headers)
            assert r.status == 201, await r.text()
        return seen

    async def circulated(barcode: str) -> None:
        """Lent and returned once: circulation's row of the copy exists, as for every copy after its first loan."""
        r = await client.post("/api/v1/circulation/checkouts", json=_body(barcode, card), headers=headers)
        assert r.status == 201, await r.text()
        back = {"item_barcode": barcode, "service_point": "CQL-MAIN"}
        r = await client.post("/api/v1/circulation/checkins", json=back, headers=headers)
        assert r.status == 200, await r.text()

    await circulated(codes[1])
    light = await measured(codes[1])
    for b in codes[2:25]:  # the same count however many loans the reader holds
        r = await client.post("/api/v1/circulation/checkouts", json=_body(b, card), headers=headers)
        assert r.status == 201, await r.text()
    await circulated(codes[25])
    heavy = await measured(codes[25])
    counts = [len(light), len(heavy)]
    seen = light
    statements = "\n".join(seen)
    limit = MAX_STATEMENTS[demo.db.engine.dialect.name]
    assert counts[0] <= limit, f"{counts[0]} statements per checkout:\n{statements}"
    extra = "\n".join(x for x in heavy if x not in light)
    assert len(set(counts)) == 1, f"the count grows with the reader's loans: {counts}\n{extra}"


# a renewal by the desk, with the request's authentication: the loan, the reader's and the person's blocks, the item
# type and any waiting request are one read, then the conditional UPDATE, the audit entry and the outbox: 6 on SQLite,
# 5 on PostgreSQL (the audit chain's lock carries the outbox rows); it was 12 on SQLite and 11 on PostgreSQL
MAX_RENEWAL_STATEMENTS = {"sqlite": 6, "postgresql": 5}


async def test_a_renewal_reads_its_facts_in_one_statement(client, demo, monkeypatch):
    monkeypatch.setattr(cache, "TTL_S", 3600.0)
    await add_copies(demo, "CQL", ["RENEW-001"])
    headers = await token_for(client, "librarian@CQL")
    resp = await client.post(
        "/api/v1/circulation/checkouts", json=_body("RENEW-001", RESIDENTS[0].ss_card), headers=headers
    )
    assert resp.status == 201, await resp.text()
    loan = await resp.json()
    with counting(demo) as seen:
        r = await client.post(f"/api/v1/circulation/loans/{loan['id']}/renewals", headers=headers)
        assert r.status == 200, await r.text()
    assert (await r.json())["renewals"] == 1
    limit = MAX_RENEWAL_STATEMENTS[demo.db.engine.dialect.name]
    statements = "\n".join(seen)
    assert len(seen) <= limit, f"{len(seen)} statements per renewal:\n{statements}"


# a check-in at the owner's desk of a copy no request wants, with the request's authentication: the copy with its
# state, its active loan and whether any request could want it, the item's (returning the state it leaves),
# catalogue's, loan's and two counters' UPDATEs, the audit entry and the outbox: 10 on SQLite, 5 on PostgreSQL (where
# those five UPDATEs are one statement, and the audit chain's lock carries the outbox rows); it was 13, then 12 with
# the item's state read again at the end, then 11 and 7 with the active loan read by itself
MAX_CHECKIN_STATEMENTS = {"sqlite": 10, "postgresql": 5}


async def test_a_checkin_sends_a_bounded_number_of_statements(client, demo, monkeypatch):
    monkeypatch.setattr(cache, "TTL_S", 3600.0)
    await add_copies(demo, "CQL", ["BACK-001"])
    headers = await token_for(client, "librarian@CQL")
    back = {"item_barcode": "BACK-001", "service_point": "CQL-MAIN"}
    for _ in range(2):  # the second round is the steady state (circulation's row of the copy exists)
        lend = _body("BACK-001", RESIDENTS[0].ss_card)
        r = await client.post("/api/v1/circulation/checkouts", json=lend, headers=headers)
        assert r.status == 201, await r.text()
        with counting(demo) as seen:
            r = await client.post("/api/v1/circulation/checkins", json=back, headers=headers)
            assert r.status == 200, await r.text()
    assert (await r.json())["action"] == "shelve"
    limit = MAX_CHECKIN_STATEMENTS[demo.db.engine.dialect.name]
    statements = "\n".join(seen)
    assert len(seen) <= limit, f"{len(seen)} statements per check-in:\n{statements}"


async def test_an_idempotency_key_costs_two_statements(client, demo, monkeypatch):
    """The key is claimed by one statement (an insert that does nothing when the key exists) and its answer
    stored by another, in the write's own transaction; it was three (a read of the key first)."""
    monkeypatch.setattr(cache, "TTL_S", 3600.0)
    codes = [f"KEYED-{i:03d}" for i in range(4)]
    await add_copies(demo, "CQL", codes)
    headers = await token_for(client, "librarian@CQL")
    card = RESIDENTS[0].ss_card
    back = {"service_point": "CQL-MAIN"}
    for b in codes:  # every copy circulated once: the steady state
        r = await client.post("/api/v1/circulation/checkouts", json=_body(b, card), headers=headers)
        assert r.status == 201, await r.text()
        r = await client.post("/api/v1/circulation/checkins", json={**back, "item_barcode": b}, headers=headers)
        assert r.status == 200, await r.text()

    async def measured(barcode: str, extra: dict[str, str]) -> tuple[list[str], dict]:
        with counting(demo) as seen:
            r = await client.post(
                "/api/v1/circulation/checkouts", json=_body(barcode, card), headers={**headers, **extra}
            )
            assert r.status == 201, await r.text()
        return seen, await r.json()

    plain, _ = await measured(codes[0], {})
    keyed, first = await measured(codes[1], {"Idempotency-Key": "count-1"})
    extra = "\n".join(x for x in keyed if x not in plain)
    assert len(keyed) - len(plain) <= 2, f"{len(keyed) - len(plain)} statements for the key:\n{extra}"
    # a replay reads the stored answer and writes nothing
    replay, again = await measured(codes[1], {"Idempotency-Key": "count-1"})
    assert again == first
    assert not [x for x in replay if x.startswith(("UPDATE", "DELETE"))], "\n".join(replay)
