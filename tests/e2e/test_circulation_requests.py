"""Requests (holds) through HTTP: ask anywhere, pull, transit, hold shelf, pickup; targeting order; cancellation at
every stage; renewal blocked by a waiting reader; hold-shelf expiry to the next request."""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import select

from federation.audit.models import AuditEntry
from federation.db import OutboxMessage
from federation.demo import RESIDENTS
from library.circulation import requests
from library.circulation.models import ItemState, LibraryPolicy, Request
from tests.circulation_support import add_copies
from tests.conftest import token_for

CQ = RESIDENTS[0]  # 张伟, Chongqing (CQL)
CQ2 = RESIDENTS[1]
CQ3 = RESIDENTS[2]
SC = RESIDENTS[5]  # 杨磊, Chengdu (SCL)


def ss(resident) -> dict[str, str]:
    return {"type": "social_security_card", "value": resident.ss_card}


async def place(client, headers, pickup, *, work_id=None, resident=None, **kw):
    body = {"pickup_service_point": pickup, "work_id": work_id}
    if resident is not None:
        body["credential"] = ss(resident)
    body.update(kw.get("body", {}))
    return await client.post("/api/v1/circulation/requests", json=body, headers={**headers, **kw.get("extra", {})})


async def checkout(client, headers, barcode, resident, desk):
    body = {"item_barcode": barcode, "credential": ss(resident), "service_point": desk}
    return await client.post("/api/v1/circulation/checkouts", json=body, headers=headers)


async def checkin(client, headers, barcode, desk):
    return await client.post(
        "/api/v1/circulation/checkins", json={"item_barcode": barcode, "service_point": desk}, headers=headers
    )


async def receive(client, headers, transit_id):
    resp = await client.post(f"/api/v1/circulation/transits/{transit_id}/receipt", json={}, headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def pull_list(client, headers, desk):
    resp = await client.get("/api/v1/circulation/pull-list", params={"service_point": desk}, headers=headers)
    assert resp.status == 200, await resp.text()
    return [(x["barcode"], x["pickup_service_point"]) for x in (await resp.json())["items"]]


async def request_row(svc, rid) -> Request:
    async with svc.db.reader() as s:
        return (await s.execute(select(Request).where(Request.id == rid))).scalar_one()


async def item(svc, barcode) -> tuple[str, str | None, str | None]:
    async with svc.db.reader() as s:
        st = (await s.execute(select(ItemState).where(ItemState.barcode == barcode))).scalar_one()
        return st.status, st.current_library, st.current_service_point


async def events(svc, topic):
    async with svc.db.reader() as s:
        return list((await s.execute(select(OutboxMessage.payload).where(OutboxMessage.topic == topic))).scalars())


async def audit_actions(svc, action):
    async with svc.db.reader() as s:
        return list((await s.execute(select(AuditEntry).where(AuditEntry.action == action))).scalars())


async def one_work(demo, copies: dict[str, list[str]], title: str = "三体") -> str:
    """Copies of one work at several libraries; returns the work id (the union catalogue clusters them)."""
    work_ids = set()
    for library, barcodes in copies.items():
        rows = await add_copies(demo, library, barcodes, title=title)
        work_ids |= {r.work_id for r in rows.values()}
    assert len(work_ids) == 1, work_ids
    return work_ids.pop()


async def tokens(client):
    return {c: await token_for(client, f"librarian@{c}") for c in ("CQL", "CDL", "SCL")}


async def test_request_anywhere_across_libraries_and_cities(client, demo):
    work = await one_work(demo, {"CQL": ["CQL-R1"], "CDL": ["CDL-R1"]})
    lib = await tokens(client)
    # CQL's own copy is lent: the only available copy is in the other city, at CDL
    assert (await checkout(client, lib["CQL"], "CQL-R1", CQ3, "CQL-MAIN")).status == 201
    me = await token_for(client, CQ.id_number)

    resp = await place(client, me, "CQL-MAIN", work_id=work, extra={"Idempotency-Key": "req-1"})
    assert resp.status == 201, await resp.text()
    req = await resp.json()
    assert (req["state"], req["pickup_library"], req["pickup_service_point"]) == ("targeted", "CQL", "CQL-MAIN")
    again = await place(client, me, "CQL-MAIN", work_id=work, extra={"Idempotency-Key": "req-1"})
    assert (again.status, await again.json()) == (201, req)
    dup = await place(client, me, "CQL-MAIN", work_id=work)
    assert (dup.status, (await dup.json())["code"]) == (409, "circulation.already_requested")

    assert await pull_list(client, lib["CDL"], "CDL-MAIN") == [("CDL-R1", "CQL-MAIN")]
    assert await pull_list(client, lib["CQL"], "CQL-MAIN") == []
    # pulling: CDL checks the copy in at its own desk, it travels to the pickup point
    out = await (await checkin(client, lib["CDL"], "CDL-R1", "CDL-MAIN")).json()
    assert (out["action"], out["destination"], out["item"]["status"]) == ("transit", "CQL-MAIN", "in_transit")
    assert out["transit"]["reason"] == "hold" and out["loan"] is None
    assert await pull_list(client, lib["CDL"], "CDL-MAIN") == []
    assert (await request_row(demo, req["id"])).state == "in_transit"

    got = await receive(client, lib["CQL"], out["transit"]["id"])
    assert (got["item"]["status"], got["item"]["current_service_point"]) == ("on_hold_shelf", "CQL-MAIN")
    row = await request_row(demo, req["id"])
    assert row.state == "ready" and row.item_id == got["item"]["item_id"]
    assert dt.timedelta(days=6, hours=23) < row.hold_until - row.ready_at <= dt.timedelta(days=7)
    ready = await events(demo, "circulation.request_ready")
    assert [(e["request_id"], e["pickup_service_point"]) for e in ready] == [(req["id"], "CQL-MAIN")]

    # only the reader it is held for takes it home
    resp = await checkout(client, lib["CQL"], "CDL-R1", CQ2, "CQL-MAIN")
    assert (resp.status, (await resp.json())["code"]) == (409, "circulation.not_held_for_reader")
    resp = await checkout(client, lib["CQL"], "CDL-R1", CQ, "CQL-MAIN")
    assert resp.status == 201, await resp.text()
    loan = await resp.json()
    row = await request_row(demo, req["id"])
    assert (row.state, row.loan_id) == ("fulfilled", loan["id"]) and row.closed_at is not None

    mine = await (await client.get("/api/v1/me/requests", headers=me)).json()
    assert [(x["id"], x["state"], x["title"]) for x in mine["items"]] == [(req["id"], "fulfilled", "三体")]
    other = await client.get("/api/v1/me/requests", headers=await token_for(client, CQ2.id_number))
    assert (await other.json())["items"] == []
    assert len(await audit_actions(demo, "circulation.request_placed")) == 1
    assert len(await audit_actions(demo, "circulation.request_fulfilled")) == 1
    assert len(await events(demo, "circulation.request_placed")) == 1
    assert len(await events(demo, "circulation.request_fulfilled")) == 1


async def test_targeting_order_and_libraries_that_do_not_lend_out(client, demo):
    work = await one_work(demo, {"SCL": ["SCL-T1"], "CDL": ["CDL-T1"], "CQL": ["CQL-T1"]})
    lib = await tokens(client)
    got = []
    for who in (SC, CQ, CQ2, CQ3):
        resp = await place(client, lib["SCL"], "SCL-MAIN", work_id=work, resident=who)
        assert resp.status == 201, await resp.text()
        got.append(await resp.json())
    barcodes = {}
    async with demo.db.reader() as s:
        barcodes = dict((await s.execute(select(ItemState.item_id, ItemState.barcode))).all())
    # the pickup library's copy, then the same city's (CDL, 成都), then the other city's (CQL, 重庆); then it waits
    assert [(r["state"], barcodes.get(r["item_id"])) for r in got] == [
        ("targeted", "SCL-T1"),
        ("targeted", "CDL-T1"),
        ("targeted", "CQL-T1"),
        ("queued", None),
    ]
    assert await pull_list(client, lib["CQL"], "CQL-MAIN") == [("CQL-T1", "SCL-MAIN")]

    # CDL stops lending to other libraries: a cancelled targeted request's copy stays home, available
    async with demo.db.uow() as uow:
        uow.session.add(LibraryPolicy(library="CDL", lends_to_other_libraries=False))
        await uow.commit()
    resp = await client.delete(f"/api/v1/circulation/requests/{got[1]['id']}", headers=lib["SCL"])
    assert resp.status == 200 and (await resp.json())["state"] == "cancelled"
    assert await item(demo, "CDL-T1") == ("available", "CDL", "CDL-MAIN")
    assert await pull_list(client, lib["CDL"], "CDL-MAIN") == []
    assert (await request_row(demo, got[3]["id"])).state == "queued"
    # a CDL reader picking up at CDL still gets it
    resp = await place(client, lib["CDL"], "CDL-MAIN", work_id=work, resident=RESIDENTS[7])
    assert (await resp.json())["state"] == "targeted"
    assert await pull_list(client, lib["CDL"], "CDL-MAIN") == [("CDL-T1", "CDL-MAIN")]
    # pulled at the pickup library itself: straight to the hold shelf
    out = await (await checkin(client, lib["CDL"], "CDL-T1", "CDL-MAIN")).json()
    assert (out["action"], out["item"]["status"]) == ("hold_shelf", "on_hold_shelf")


async def test_cancel_at_every_stage_leaves_the_copy_right(client, demo):
    work = await one_work(demo, {"CDL": ["CDL-C1"]})
    lib = await tokens(client)
    me = await token_for(client, CQ.id_number)
    stranger = await token_for(client, CQ2.id_number)

    async def cancel(rid, headers=me):
        resp = await client.delete(f"/api/v1/circulation/requests/{rid}", headers=headers)
        assert resp.status == 200, await resp.text()
        return await resp.json()

    # targeted: the copy stays available where it is
    r = await (await place(client, me, "CQL-MAIN", work_id=work)).json()
    assert r["state"] == "targeted"
    resp = await client.delete(f"/api/v1/circulation/requests/{r['id']}", headers=stranger)
    assert (resp.status, (await resp.json())["code"]) == (404, "circulation.request_not_found")
    assert (await cancel(r["id"]))["state"] == "cancelled"
    assert await item(demo, "CDL-C1") == ("available", "CDL", "CDL-MAIN")
    assert await pull_list(client, lib["CDL"], "CDL-MAIN") == []
    resp = await client.delete(f"/api/v1/circulation/requests/{r['id']}", headers=me)
    assert (resp.status, (await resp.json())["code"]) == (409, "circulation.request_closed")

    # queued: nothing moves
    assert (await checkout(client, lib["CDL"], "CDL-C1", SC, "CDL-MAIN")).status == 201
    r = await (await place(client, me, "CQL-MAIN", work_id=work)).json()
    assert r["state"] == "queued"
    assert (await cancel(r["id"], lib["CQL"]))["state"] == "cancelled"
    out = await (await checkin(client, lib["CDL"], "CDL-C1", "CDL-MAIN")).json()
    assert (out["action"], out["item"]["status"]) == ("shelve", "available")

    # in transit: cancelled, the copy travels on and goes home from the pickup point
    r = await (await place(client, me, "CQL-MAIN", work_id=work)).json()
    out = await (await checkin(client, lib["CDL"], "CDL-C1", "CDL-MAIN")).json()
    assert out["action"] == "transit"
    assert (await cancel(r["id"]))["state"] == "cancelled"
    assert await item(demo, "CDL-C1") == ("in_transit", "CDL", "CDL-MAIN")
    got = await receive(client, lib["CQL"], out["transit"]["id"])
    assert (got["item"]["status"], got["item"]["current_library"]) == ("in_transit", "CQL")
    home = (
        await (
            await client.get("/api/v1/circulation/transits", params={"service_point": "CDL-MAIN"}, headers=lib["CDL"])
        ).json()
    )["items"]
    assert [(t["reason"], t["from_service_point"]) for t in home] == [("return_home", "CQL-MAIN")]
    got = await receive(client, lib["CDL"], home[0]["id"])
    assert await item(demo, "CDL-C1") == ("available", "CDL", "CDL-MAIN")

    # on the hold shelf, another reader waiting elsewhere: the copy goes to them
    r = await (await place(client, me, "CQL-MAIN", work_id=work)).json()
    out = await (await checkin(client, lib["CDL"], "CDL-C1", "CDL-MAIN")).json()
    await receive(client, lib["CQL"], out["transit"]["id"])
    assert (await request_row(demo, r["id"])).state == "ready"
    nxt = await (await place(client, lib["SCL"], "SCL-MAIN", work_id=work, resident=SC)).json()
    assert nxt["state"] == "queued"
    assert (await cancel(r["id"]))["state"] == "cancelled"
    assert await item(demo, "CDL-C1") == ("in_transit", "CQL", "CQL-MAIN")
    row = await request_row(demo, nxt["id"])
    assert row.state == "in_transit" and row.transit_id
    await receive(client, lib["SCL"], row.transit_id)
    assert (await request_row(demo, nxt["id"])).state == "ready"
    assert await item(demo, "CDL-C1") == ("on_hold_shelf", "SCL", "SCL-MAIN")

    # on the hold shelf, nobody else waiting: back home by transit
    await cancel(nxt["id"], lib["SCL"])
    assert await item(demo, "CDL-C1") == ("in_transit", "SCL", "SCL-MAIN")
    home = (
        await (
            await client.get("/api/v1/circulation/transits", params={"service_point": "CDL-MAIN"}, headers=lib["CDL"])
        ).json()
    )["items"]
    await receive(client, lib["CDL"], home[0]["id"])
    assert await item(demo, "CDL-C1") == ("available", "CDL", "CDL-MAIN")

    # on the hold shelf at the owner: back on the shelf
    r = await (await place(client, lib["CDL"], "CDL-MAIN", work_id=work, resident=SC)).json()
    await checkin(client, lib["CDL"], "CDL-C1", "CDL-MAIN")
    assert await item(demo, "CDL-C1") == ("on_hold_shelf", "CDL", "CDL-MAIN")
    await cancel(r["id"], lib["CDL"])
    assert await item(demo, "CDL-C1") == ("available", "CDL", "CDL-MAIN")
    assert len(await audit_actions(demo, "circulation.request_cancelled")) == 6


async def test_renewal_blocked_and_a_returned_copy_routed_to_the_waiting_request(client, demo):
    work = await one_work(demo, {"CQL": ["CQL-W1"]})
    lib = await tokens(client)
    loan = await (await checkout(client, lib["CQL"], "CQL-W1", CQ, "CQL-MAIN")).json()
    # one's own request does not block one's renewal
    url = f"/api/v1/circulation/loans/{loan['id']}/renewals"
    r = await (await place(client, lib["SCL"], "SCL-MAIN", work_id=work, resident=SC)).json()
    assert r["state"] == "queued"
    resp = await client.post(url, headers=await token_for(client, CQ.id_number))
    assert (resp.status, (await resp.json())["code"]) == (409, "circulation.renewal_blocked_by_request")
    resp = await client.post(url, headers=lib["CQL"])
    assert (resp.status, (await resp.json())["code"]) == (409, "circulation.renewal_blocked_by_request")

    # the check-in anywhere routes the copy to the waiting request
    out = await (await checkin(client, lib["CDL"], "CQL-W1", "CDL-B1")).json()
    assert (out["action"], out["destination"], out["transit"]["reason"]) == ("transit", "SCL-MAIN", "hold")
    assert out["loan"]["state"] == "returned"
    assert (await request_row(demo, r["id"])).state == "in_transit"
    await receive(client, lib["SCL"], out["transit"]["id"])
    assert (await request_row(demo, r["id"])).state == "ready"


async def test_hold_shelf_expiry_goes_to_the_next_request_then_back(client, demo):
    work = await one_work(demo, {"CQL": ["CQL-E1"]})
    lib = await tokens(client)
    first = await (await place(client, lib["CQL"], "CQL-MAIN", work_id=work, resident=CQ)).json()
    second = await (await place(client, lib["CQL"], "CQL-MAIN", work_id=work, resident=CQ2)).json()
    assert (first["state"], second["state"]) == ("targeted", "queued")
    out = await (await checkin(client, lib["CQL"], "CQL-E1", "CQL-MAIN")).json()
    assert out["action"] == "hold_shelf"
    assert (await request_row(demo, first["id"])).state == "ready"

    assert await requests.expire_holds(demo) == 0  # not yet
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)
    assert await requests.expire_holds(demo, now=later) == 1
    assert (await request_row(demo, first["id"])).state == "expired"
    row = await request_row(demo, second["id"])
    assert row.state == "ready" and row.item_id == out["item"]["item_id"]
    assert await item(demo, "CQL-E1") == ("on_hold_shelf", "CQL", "CQL-MAIN")
    resp = await checkout(client, lib["CQL"], "CQL-E1", CQ, "CQL-MAIN")
    assert (resp.status, (await resp.json())["code"]) == (409, "circulation.not_held_for_reader")

    # the job kind does the same; with nobody waiting the copy goes back on the shelf
    assert "circulation.expire_holds" in demo.job_handlers
    assert await requests.expire_holds(demo, now=later + dt.timedelta(days=8)) == 1
    assert (await request_row(demo, second["id"])).state == "expired"
    assert await item(demo, "CQL-E1") == ("available", "CQL", "CQL-MAIN")
    assert len(await events(demo, "circulation.request_expired")) == 2
    assert len(await audit_actions(demo, "circulation.request_expired")) == 2


async def test_request_input_is_checked(client, demo):
    work = await one_work(demo, {"CQL": ["CQL-I1"]})
    lib = await tokens(client)
    resp = await place(client, lib["CQL"], "CQL-MAIN", work_id=work)
    assert (resp.status, (await resp.json())["code"]) == (422, "circulation.credential_required")
    resp = await place(client, lib["CQL"], "CQL-MAIN", work_id="nope", resident=CQ)
    assert (resp.status, (await resp.json())["code"]) == (404, "circulation.work_not_found")
    resp = await place(client, lib["CQL"], "SCL-MAIN", work_id=work, resident=CQ)
    assert (resp.status, (await resp.json())["code"]) == (403, "circulation.wrong_library")
    # an item-level request for one copy
    resp = await place(client, lib["CQL"], "CQL-B1", resident=CQ, body={"item_barcode": "CQL-I1"})
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["state"] == "targeted"
    resp = await client.get("/api/v1/circulation/pull-list", params={"service_point": "SCL-MAIN"}, headers=lib["CQL"])
    assert (resp.status, (await resp.json())["code"]) == (403, "circulation.wrong_library")


async def test_a_reader_cannot_request_a_work_they_have_on_loan(client, demo):
    """A copy of the work in the reader's hands: a request would only wait for their own return (or send them a
    second copy). Refused for the work and for any copy of it, by staff and by the resident, and nothing changes."""
    work = await one_work(demo, {"CQL": ["CQL-L1", "CQL-L2"], "SCL": ["SCL-L1"]})
    lib = await tokens(client)
    assert (await checkout(client, lib["CQL"], "CQL-L1", CQ, "CQL-MAIN")).status == 201
    me = await token_for(client, CQ.id_number)
    requests_before = len(await audit_actions(demo, "circulation.request_placed"))

    refused = [
        await place(client, me, "SCL-MAIN", work_id=work),
        await place(client, lib["SCL"], "SCL-MAIN", resident=CQ, work_id=work),
        await place(client, lib["SCL"], "SCL-MAIN", resident=CQ, body={"item_barcode": "SCL-L1"}),
        await place(client, lib["CQL"], "CQL-MAIN", resident=CQ, body={"item_barcode": "CQL-L2"}),
    ]
    for resp in refused:
        body = await resp.json()
        assert (resp.status, body["code"]) == (409, "circulation.already_on_loan"), body
        assert "CQL-L1" in body["detail"]
    assert len(await audit_actions(demo, "circulation.request_placed")) == requests_before
    async with demo.db.reader() as s:
        assert (await s.execute(select(Request).where(Request.work_id == work))).first() is None
    assert await pull_list(client, lib["SCL"], "SCL-MAIN") == []

    # another reader may; and once the copy is back, so may the first
    assert (await place(client, lib["SCL"], "SCL-MAIN", resident=SC, work_id=work)).status == 201
    assert (await checkin(client, lib["CQL"], "CQL-L1", "CQL-MAIN")).status == 200
    resp = await place(client, me, "CQL-MAIN", work_id=work)
    assert resp.status == 201, await resp.text()


async def test_requests_racing_for_one_copy_target_it_once(client, demo):
    work = await one_work(demo, {"CQL": ["CQL-X1"]})
    lib = await tokens(client)
    readers = [RESIDENTS[i] for i in (0, 1, 2, 3, 4)]
    results = await asyncio.gather(*(place(client, lib["CQL"], "CQL-MAIN", work_id=work, resident=r) for r in readers))
    bodies = [await r.json() for r in results]
    assert {r.status for r in results} == {201}, bodies
    assert sorted(b["state"] for b in bodies) == ["queued"] * 4 + ["targeted"]
    assert await pull_list(client, lib["CQL"], "CQL-MAIN") == [("CQL-X1", "CQL-MAIN")]
