"""Transition item available --declare_missing--> missing: a librarian of the owner (or an administrator) declares
a copy not found on the shelf; a request that had targeted it looks for another copy; audited."""

from __future__ import annotations

from sqlalchemy import select

from federation.audit.models import AuditEntry
from federation.demo import RESIDENTS
from library.circulation.models import ItemState, Request
from tests.conftest import token_for
from tests.e2e.test_circulation_requests import checkout, one_work, place, tokens

CQ = RESIDENTS[0]


async def declare(client, headers, barcode, declaration, **extra):
    body = {"item_barcode": barcode, "declaration": declaration, **extra}
    return await client.post("/api/v1/circulation/item-declarations", json=body, headers=headers)


async def test_declare_missing(client, demo):
    work = await one_work(demo, {"CQL": ["CQL-M1"], "CDL": ["CDL-M1"]})
    lib = await tokens(client)
    me = await token_for(client, CQ.id_number)
    req = await (await place(client, me, "CQL-MAIN", work_id=work)).json()
    assert req["state"] == "targeted"

    other = await declare(client, lib["SCL"], "CQL-M1", "missing", item_library="CQL")
    assert (other.status, (await other.json())["code"]) == (403, "circulation.not_your_library")
    resp = await declare(client, lib["CQL"], "CQL-M1", "missing", note="盘点未见")
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["item"]["status"] == "missing" and (await resp.json())["loan"] is None
    async with demo.db.reader() as s:
        moved = (await s.execute(select(Request).where(Request.id == req["id"]))).scalar_one()
        target = (await s.execute(select(ItemState).where(ItemState.item_id == moved.item_id))).scalar_one()
        [entry] = (await s.execute(select(AuditEntry).where(AuditEntry.action == "circulation.item_missing"))).scalars()
    assert moved.state == "targeted" and target.barcode == "CDL-M1"  # the other city's copy now
    assert entry.details["was"] == "available" and entry.details["note"] == "盘点未见"

    # a missing copy cannot be lent, and cannot be declared missing twice
    assert (await checkout(client, lib["CQL"], "CQL-M1", CQ, "CQL-MAIN")).status == 409
    again = await declare(client, lib["CQL"], "CQL-M1", "missing")
    assert (again.status, (await again.json())["code"]) == (409, "circulation.transition_refused")
    unknown = await declare(client, lib["CQL"], "NO-SUCH", "missing")
    assert (unknown.status, (await unknown.json())["code"]) == (404, "circulation.item_not_found")
