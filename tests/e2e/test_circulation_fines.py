"""Fines, where a library charges them: accrued at check-in of an overdue loan (closed days not counted, capped),
shown to the resident, blocking checkouts at that library above its threshold, paid or waived by its staff."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from federation.audit.models import AuditEntry
from federation.db import utcnow
from federation.demo import RESIDENTS
from library.circulation.calendar import TZ
from library.circulation.models import Loan
from tests.circulation_support import add_copies
from tests.conftest import token_for
from tests.e2e.test_circulation_requests import checkin, checkout, tokens

CQ = RESIDENTS[0]
POLICY = {"floating": False, "lends_to_other_libraries": True, "hold_shelf_days": None}


async def overdue(svc, loan_id: str, days: int) -> None:
    async with svc.db.uow() as uow:
        due = utcnow() - dt.timedelta(days=days)
        await uow.session.execute(update(Loan).where(Loan.id == loan_id).values(due_at=due))
        await uow.commit()


async def test_fines_accrue_block_and_are_settled(client, demo):
    await add_copies(demo, "CQL", ["CQL-F1", "CQL-F2", "CQL-F3", "CQL-F4"])
    await add_copies(demo, "SCL", ["SCL-F1"])
    lib = await tokens(client)
    admin = await token_for(client, "admin@federation")
    fines = {"fine_per_day_fen": 10, "fine_cap_fen": 50, "fine_block_fen": 15}
    put = await client.put("/api/v1/circulation/policies/libraries/CQL", json={**POLICY, **fines}, headers=lib["CQL"])
    assert put.status == 200, await put.text()
    # yesterday (China time) CQL was closed: that day costs nothing
    yesterday = (utcnow().astimezone(TZ) - dt.timedelta(days=1)).date()
    days = "/api/v1/circulation/libraries/CQL/closed-days"
    assert (await client.post(days, json={"date": yesterday.isoformat()}, headers=admin)).status == 201

    on_time = await (await checkout(client, lib["CQL"], "CQL-F1", CQ, "CQL-MAIN")).json()
    await checkin(client, lib["CQL"], "CQL-F1", "CQL-MAIN")
    late = await (await checkout(client, lib["CQL"], "CQL-F2", CQ, "CQL-MAIN")).json()
    await overdue(demo, late["id"], 3)
    me = await token_for(client, CQ.id_number)
    [shown] = (await (await client.get("/api/v1/me/loans", headers=me)).json())["items"]
    assert shown["fine_so_far_fen"] == 20  # what returning it today costs
    # returned at another library: the lending library's fine and calendar still apply
    assert (await checkin(client, lib["SCL"], "CQL-F2", "SCL-MAIN")).status == 200

    mine = await (await client.get("/api/v1/me/fines", headers=me)).json()
    [fine] = mine["items"]
    assert (fine["loan_id"], fine["library"], fine["days"], fine["amount_fen"], fine["state"]) == (
        late["id"],
        "CQL",
        2,
        20,
        "open",
    )
    assert mine["open_fen"] == 20 and on_time["id"] != fine["loan_id"]

    # ¥0.20 open is above CQL's ¥0.15: no more loans there, loans elsewhere go on
    blocked = await checkout(client, lib["CQL"], "CQL-F3", CQ, "CQL-MAIN")
    body = await blocked.json()
    assert (blocked.status, body["code"], body["owed_fen"]) == (409, "circulation.fine_block", 20)
    assert (await checkout(client, lib["SCL"], "SCL-F1", CQ, "SCL-MAIN")).status == 201

    pay = f"/api/v1/circulation/fines/{fine['id']}/payment"
    other = await client.post(pay, json={}, headers=lib["SCL"])
    assert (other.status, (await other.json())["code"]) == (403, "circulation.not_your_library")
    paid = await client.post(pay, json={"note": "现金"}, headers=lib["CQL"])
    assert paid.status == 200 and (await paid.json())["state"] == "paid"
    twice = await client.post(f"/api/v1/circulation/fines/{fine['id']}/waiver", json={}, headers=admin)
    assert (twice.status, (await twice.json())["code"]) == (409, "circulation.fine_settled")
    assert (await client.post("/api/v1/circulation/fines/nope/payment", json={}, headers=admin)).status == 404
    third = await (await checkout(client, lib["CQL"], "CQL-F3", CQ, "CQL-MAIN")).json()

    # a long delay is capped; an administrator waives it
    await overdue(demo, third["id"], 40)
    await checkin(client, lib["CQL"], "CQL-F3", "CQL-MAIN")
    capped = [
        f for f in (await (await client.get("/api/v1/me/fines", headers=me)).json())["items"] if f["state"] == "open"
    ]
    assert [f["amount_fen"] for f in capped] == [50]
    waived = await client.post(f"/api/v1/circulation/fines/{capped[0]['id']}/waiver", json={}, headers=admin)
    assert (await waived.json())["state"] == "waived"
    assert (await (await client.get("/api/v1/me/fines", headers=me)).json())["open_fen"] == 0

    async with demo.db.reader() as s:
        actions = list(
            (
                await s.execute(
                    select(AuditEntry.action).where(
                        AuditEntry.action.in_(["circulation.fine_payment", "circulation.fine_waiver"])
                    )
                )
            ).scalars()
        )
    assert sorted(actions) == ["circulation.fine_payment", "circulation.fine_waiver"]


async def test_a_library_without_fines_charges_nothing(client, demo):
    await add_copies(demo, "CDL", ["CDL-F1"])
    lib = await tokens(client)
    loan = await (await checkout(client, lib["CDL"], "CDL-F1", CQ, "CDL-MAIN")).json()
    await overdue(demo, loan["id"], 10)
    await checkin(client, lib["CDL"], "CDL-F1", "CDL-MAIN")
    me = await token_for(client, CQ.id_number)
    assert (await (await client.get("/api/v1/me/fines", headers=me)).json()) == {"items": [], "open_fen": 0}
