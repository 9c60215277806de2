"""Transitions item on_loan --declare_lost--> lost and loan active --declare_lost--> lost: the reader lost the copy,
the loan ends and the reader's counters free up; the copy brought back later checks in as available."""

from __future__ import annotations

from sqlalchemy import select

from federation.demo import RESIDENTS
from library.circulation.models import Borrower, Loan
from tests.circulation_support import add_copies
from tests.conftest import token_for
from tests.e2e.test_circulation_declare_missing import declare
from tests.e2e.test_circulation_requests import checkin, checkout, tokens

CQ = RESIDENTS[0]


async def test_declare_lost(client, demo):
    await add_copies(demo, "CQL", ["CQL-L1"])
    lib = await tokens(client)
    loan = await (await checkout(client, lib["CQL"], "CQL-L1", CQ, "CQL-MAIN")).json()
    admin = await token_for(client, "admin@federation")
    resp = await declare(client, admin, "CQL-L1", "lost")
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["item"]["status"] == "lost" and body["loan"]["id"] == loan["id"] and body["loan"]["state"] == "lost"
    async with demo.db.reader() as s:
        assert (await s.get(Borrower, (await s.get(Loan, loan["id"])).person_id)).active_loans == 0
    me = await token_for(client, CQ.id_number)
    assert (await (await client.get("/api/v1/me/loans", headers=me)).json())["items"] == []
    # found after all: it checks in without a loan
    out = await (await checkin(client, lib["CQL"], "CQL-L1", "CQL-MAIN")).json()
    assert (out["action"], out["loan"], out["item"]["status"]) == ("shelve", None, "available")
    async with demo.db.reader() as s:
        assert (await s.execute(select(Loan.state).where(Loan.id == loan["id"]))).scalar_one() == "lost"
