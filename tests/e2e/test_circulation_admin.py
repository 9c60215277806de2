"""Policy administration without a deploy: federation-wide blocks, loan rules and the federation's limits, each
change audited; librarians act for their own library only."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update

from federation.audit.models import AuditEntry
from federation.db import utcnow
from federation.demo import RESIDENTS
from library.circulation.models import Loan
from tests.circulation_support import add_copies
from tests.conftest import token_for
from tests.e2e.test_circulation_requests import checkout, one_work, place, ss, tokens

CQ = RESIDENTS[0]
SC = RESIDENTS[5]


async def audits(svc, action: str) -> list[AuditEntry]:
    async with svc.db.reader() as s:
        q = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
        return list((await s.execute(q)).scalars())


async def block(client, headers, resident, blocked: bool, reason: str = "未归还图书"):
    body = {"credential": ss(resident), "blocked": blocked, "reason": reason}
    return await client.post("/api/v1/circulation/reader-blocks", json=body, headers=headers)


async def test_a_federation_wide_block_stops_checkout_renewal_and_request_everywhere(client, demo):
    work = await one_work(demo, {"CQL": ["CQL-B1", "CQL-B2"], "SCL": ["SCL-B1"]})
    lib = await tokens(client)
    admin = await token_for(client, "admin@federation")
    loan = await (await checkout(client, lib["CQL"], "CQL-B1", CQ, "CQL-MAIN")).json()

    # a librarian blocks only readers of their own library: CQ has no reader record at SCL
    denied = await block(client, lib["SCL"], CQ, True)
    assert (denied.status, (await denied.json())["code"]) == (403, "circulation.not_your_library")
    resp = await block(client, lib["CQL"], CQ, True)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["blocked"] is True and (await resp.json())["active_loans"] == 1

    refused = await checkout(client, lib["SCL"], "SCL-B1", CQ, "SCL-MAIN")
    body = await refused.json()
    assert (refused.status, body["code"], body["scope"]) == (409, "circulation.reader_blocked", "federation")
    me = await token_for(client, CQ.id_number)
    renewal = await client.post(f"/api/v1/circulation/loans/{loan['id']}/renewals", headers=me)
    assert (renewal.status, (await renewal.json())["code"]) == (409, "circulation.reader_blocked")
    request = await place(client, me, "SCL-MAIN", work_id=work)
    assert (request.status, (await request.json())["code"]) == (409, "circulation.reader_blocked")
    # the copy and the counters did not move
    async with demo.db.reader() as s:
        assert len(list((await s.execute(select(Loan))).scalars())) == 1

    lifted = await block(client, admin, CQ, False, "已归还")
    assert (await lifted.json())["blocked"] is False and (await lifted.json())["block_reason"] is None
    assert (await checkout(client, lib["SCL"], "SCL-B1", CQ, "SCL-MAIN")).status == 201
    [blocked] = await audits(demo, "circulation.reader_blocked")
    [unblocked] = await audits(demo, "circulation.reader_unblocked")
    assert blocked.details["reason"] == "未归还图书" and blocked.actor == "staff:librarian@CQL"
    assert unblocked.details["was_blocked"] is True
    assert CQ.ss_card not in str(blocked.details)


async def test_loan_rules_change_without_a_deploy(client, demo):
    await add_copies(demo, "CQL", ["CQL-P1", "CQL-P2", "CQL-P3"])
    lib = await tokens(client)
    admin = await token_for(client, "admin@federation")

    fed = await (await client.get("/api/v1/circulation/policies/federation", headers=lib["CQL"])).json()
    assert fed == {
        "max_total_loans": 8,
        "loan_days": 30,
        "max_renewals": 1,
        "overdue_block_days": None,
        "due_soon_days": 3,
        "transit_overdue_days": 7,
    }
    new = {**fed, "max_total_loans": 2, "overdue_block_days": 10}
    assert (await client.put("/api/v1/circulation/policies/federation", json=new, headers=lib["CQL"])).status == 403
    resp = await client.put("/api/v1/circulation/policies/federation", json=new, headers=admin)
    assert resp.status == 200 and await resp.json() == new
    bad = await client.put("/api/v1/circulation/policies/federation", json={**new, "loan_days": 0}, headers=admin)
    assert bad.status == 422

    rule = {"loan_days": 14, "max_renewals": 0, "max_loans": None, "can_request": False}
    path = "/api/v1/circulation/policies/libraries/CQL/rules/adult/book"
    assert (await client.put(path, json=rule, headers=lib["SCL"])).status == 403
    resp = await client.put(path, json=rule, headers=lib["CQL"])
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["reader_category"] == "adult"
    unknown = await client.put("/api/v1/circulation/policies/libraries/CQL/rules/alien/book", json=rule, headers=admin)
    assert unknown.status == 404
    nolib = await client.put("/api/v1/circulation/policies/libraries/CQH1/rules/adult/book", json=rule, headers=admin)
    assert (nolib.status, (await nolib.json())["code"]) == (404, "circulation.library_not_found")

    got = await (await client.get("/api/v1/circulation/policies/libraries/CQL", headers=admin)).json()
    assert got["floating"] is False and [r["loan_days"] for r in got["rules"]] == [14]

    # the rule applies at the next checkout: 14 days, no renewal, no requests; the federation's limit of 2
    loan = await (await checkout(client, lib["CQL"], "CQL-P1", CQ, "CQL-MAIN")).json()
    days = (dt.datetime.fromisoformat(loan["due_at"]) - dt.datetime.fromisoformat(loan["checked_out_at"])).days
    assert days >= 14 and days < 21  # closed days could only move it later
    renewal = await client.post(f"/api/v1/circulation/loans/{loan['id']}/renewals", headers=lib["CQL"])
    assert (renewal.status, (await renewal.json())["code"]) == (409, "circulation.renewal_limit")
    me = await token_for(client, CQ.id_number)
    # (a request for one copy meets the item-type rule; a request for a work, the library's "*" rules)
    req = await place(client, me, "CQL-MAIN", body={"item_barcode": "CQL-P2", "item_library": "CQL"})
    assert (req.status, (await req.json())["code"]) == (409, "circulation.request_not_allowed")
    assert (await checkout(client, lib["CQL"], "CQL-P2", CQ, "CQL-MAIN")).status == 201
    limit = await checkout(client, lib["CQL"], "CQL-P3", CQ, "CQL-MAIN")
    assert (limit.status, (await limit.json())["scope"]) == (409, "federation")

    # library settings, then the rule removed
    settings = {"floating": True, "lends_to_other_libraries": False, "hold_shelf_days": 3, "fine_per_day_fen": 10}
    resp = await client.put("/api/v1/circulation/policies/libraries/CQL", json=settings, headers=lib["CQL"])
    assert resp.status == 200 and (await resp.json())["fine_per_day_fen"] == 10
    assert (await client.delete(path, headers=lib["CQL"])).status == 204
    assert (await client.delete(path, headers=lib["CQL"])).status == 404

    changes = await audits(demo, "circulation.policy_changed")
    assert [c.details["policy"] for c in changes] == [
        "federation",
        "rule:CQL:adult:book",
        "library:CQL",
        "rule:CQL:adult:book",
    ]
    assert changes[0].details["before"]["max_total_loans"] == 8 and changes[0].details["after"]["max_total_loans"] == 2
    assert changes[-1].details["after"] is None


async def test_an_overdue_loan_blocks_checkouts_after_the_federations_days(client, demo):
    await add_copies(demo, "CQL", ["CQL-O1", "CQL-O2"])
    lib = await tokens(client)
    admin = await token_for(client, "admin@federation")
    fed = await (await client.get("/api/v1/circulation/policies/federation", headers=admin)).json()
    await client.put("/api/v1/circulation/policies/federation", json={**fed, "overdue_block_days": 5}, headers=admin)
    loan = await (await checkout(client, lib["CQL"], "CQL-O1", CQ, "CQL-MAIN")).json()
    async with demo.db.uow() as uow:
        late = utcnow() - dt.timedelta(days=4)
        await uow.session.execute(update(Loan).where(Loan.id == loan["id"]).values(due_at=late))
        await uow.commit()
    assert (await checkout(client, lib["CQL"], "CQL-O2", CQ, "CQL-MAIN")).status == 201  # 4 days: not yet
    await client.post(
        "/api/v1/circulation/checkins", json={"item_barcode": "CQL-O2", "service_point": "CQL-MAIN"}, headers=lib["CQL"]
    )
    async with demo.db.uow() as uow:
        later = utcnow() - dt.timedelta(days=6)
        await uow.session.execute(update(Loan).where(Loan.id == loan["id"]).values(due_at=later))
        await uow.commit()
    refused = await checkout(client, lib["SCL"], "CQL-O2", CQ, "CQL-MAIN")
    assert refused.status == 403  # SCL's librarian at CQL's desk
    refused = await checkout(client, lib["CQL"], "CQL-O2", CQ, "CQL-MAIN")
    body = await refused.json()
    assert (refused.status, body["code"], body["loan"]) == (409, "circulation.overdue_block", loan["id"])
