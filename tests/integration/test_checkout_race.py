"""The invariant: one copy is never on two active loans, even when many desks scan it at the same moment.

Fifty clients (concurrent tasks over HTTP) each try to lend the same hundred copies, in their own random order,
at random desks of the copies' library. Exactly one attempt per copy wins; every other is a 409. Afterwards the
loans, circulation's item states, the catalogue's item status, the readers' counters and the audit trail agree.
Run on SQLite and (with TWINCITY_TEST_DATABASE_URL) on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from federation.audit.models import AuditEntry
from federation.db import utcnow
from federation.demo import RESIDENTS
from library.catalog.models import ItemRow
from library.circulation import policies
from library.circulation.models import Borrower, ItemState, Loan, Reader
from tests.circulation_support import add_copies
from tests.conftest import token_for

CLIENTS = 50
ITEMS = 100
DESKS = ("CQL-MAIN", "CQL-B1")


async def test_fifty_desks_one_hundred_copies(client, demo):
    barcodes = [f"RACE-{i:04d}" for i in range(ITEMS)]
    copies = await add_copies(demo, "CQL", barcodes)
    async with demo.db.uow() as uow:  # enough loans for everybody: the race is about copies, not limits
        await policies.set_federation(uow.session, max_total_loans=ITEMS)
        await uow.commit()
    headers = await token_for(client, "librarian@CQL")
    rng = random.Random(20260301)

    async def desk(n: int) -> list[tuple[str, int, str | None]]:
        order = barcodes[:]
        rng.shuffle(order)
        resident = RESIDENTS[n % len(RESIDENTS)]
        out = []
        for barcode in order:
            body = {
                "item_barcode": barcode,
                "credential": {"type": "social_security_card", "value": resident.ss_card},
                "service_point": rng.choice(DESKS),
            }
            resp = await client.post("/api/v1/circulation/checkouts", json=body, headers=headers)
            data = await resp.json()
            out.append((barcode, resp.status, data.get("code") if resp.status != 201 else data["id"]))
        return out

    results = [r for rs in await asyncio.gather(*(desk(n) for n in range(CLIENTS))) for r in rs]
    assert len(results) == CLIENTS * ITEMS
    statuses = Counter(status for _, status, _ in results)
    assert statuses == {201: ITEMS, 409: ITEMS * (CLIENTS - 1)}, statuses
    wins = Counter(barcode for barcode, status, _ in results if status == 201)
    assert wins == dict.fromkeys(barcodes, 1)
    assert {code for _, status, code in results if status == 409} == {"circulation.item_unavailable"}
    won_loans = {code for _, status, code in results if status == 201}

    async with demo.db.reader() as s:
        loans = list((await s.execute(select(Loan))).scalars())
        states = dict((await s.execute(select(ItemState.item_id, ItemState.status))).all())
        catalog = dict((await s.execute(select(ItemRow.id, ItemRow.status).where(ItemRow.library == "CQL"))).all())
        audit = list((await s.execute(select(AuditEntry).where(AuditEntry.action == "circulation.checkout"))).scalars())
        readers = list((await s.execute(select(Reader))).scalars())
        borrowers = dict((await s.execute(select(Borrower.person_id, Borrower.active_loans))).all())

    ids = {c.id for c in copies.values()}
    assert {loan.id for loan in loans} == won_loans
    assert all(loan.state == "active" for loan in loans)
    assert sorted(loan.item_id for loan in loans) == sorted(ids)  # one active loan per copy
    assert states == dict.fromkeys(ids, "on_loan")
    assert catalog == dict.fromkeys(ids, "on_loan")
    assert sorted(e.details["loan"] for e in audit) == sorted(won_loans)
    by_loan = {loan.id: loan for loan in loans}
    assert all(e.subject_person_id == by_loan[e.details["loan"]].person_id for e in audit)
    per_reader = Counter(loan.reader_id for loan in loans)
    assert {r.id: r.active_loans for r in readers if r.active_loans} == dict(per_reader)
    assert {p: n for p, n in borrowers.items() if n} == dict(Counter(loan.person_id for loan in loans))
    assert len({(r.person_id, r.library) for r in readers}) == len(readers)


async def test_the_index_refuses_a_second_active_loan(demo):
    """The second guard holds on its own: the database refuses two active loans of one copy."""
    copy = (await add_copies(demo, "CQL", ["GUARD-1"]))["GUARD-1"]
    async with demo.db.uow() as uow:
        reader = Reader(person_id=await _any_person(demo), library="CQL", category="adult")
        uow.session.add(reader)
        await uow.session.flush()
        now = utcnow()

        def loan() -> Loan:
            return Loan(
                item_id=copy.id,
                barcode=copy.barcode,
                owner_library="CQL",
                library="CQL",
                reader_id=reader.id,
                person_id=reader.person_id,
                state="active",
                checkout_service_point="CQL-MAIN",
                checked_out_at=now,
                due_at=now,
            )

        uow.session.add(loan())
        await uow.session.flush()
        uow.session.add(loan())
        with pytest.raises(IntegrityError):
            await uow.session.flush()


async def _any_person(svc) -> str:
    from federation.identity.models import Person

    async with svc.db.reader() as s:
        return (await s.execute(select(Person.id).limit(1))).scalar_one()
