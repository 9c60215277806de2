"""One walk through the five flows of circulation over HTTP, across three libraries in two cities (CQL in
Chongqing; SCL and CDL in Chengdu): borrow anywhere, return anywhere with transit and receipt, request anywhere
through pull list, transit, hold shelf and checkout, renew, and cancel at each stage. Along the way: the routing
answers, the item states, the residents' inbox notices and the federation's report figures."""

from __future__ import annotations

from federation.db import utcnow
from federation.demo import RESIDENTS
from tests.conftest import token_for
from tests.e2e.test_circulation_notices import deliver_all
from tests.e2e.test_circulation_requests import checkin, checkout, item, one_work, place, pull_list, receive, tokens

CQ = RESIDENTS[0]  # 张伟, home library CQL (Chongqing)
SC = RESIDENTS[5]  # 杨磊, home library SCL (Chengdu)


async def transits(client, headers, desk, direction):
    resp = await client.get(
        "/api/v1/circulation/transits", params={"service_point": desk, "direction": direction}, headers=headers
    )
    assert resp.status == 200, await resp.text()
    return [(t["barcode"], t["to_service_point"]) for t in (await resp.json())["items"]]


async def inbox_kinds(client, svc, resident) -> list[str]:
    await deliver_all(svc)
    resp = await client.get("/api/v1/me/inbox", headers=await token_for(client, resident.id_number))
    return sorted(m["kind"] for m in (await resp.json())["items"])


async def report(client, headers, name, **params):
    resp = await client.get(f"/api/v1/circulation/reports/{name}", params=params, headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def cancel(client, headers, request_id):
    resp = await client.delete(f"/api/v1/circulation/requests/{request_id}", headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_five_flows_across_three_libraries_in_two_cities(client, demo):
    lib = await tokens(client)
    admin = await token_for(client, "admin@federation")
    cq_me = await token_for(client, CQ.id_number)
    sc_me = await token_for(client, SC.id_number)
    await one_work(demo, {"CDL": ["CDL-X1"]}, title="红楼梦")
    await one_work(demo, {"CQL": ["CQL-X1"]}, title="西游记")
    work = await one_work(demo, {"CQL": ["CQL-W1"], "SCL": ["SCL-W1"]}, title="三国演义")
    lonely = await one_work(demo, {"CDL": ["CDL-Q1"]}, title="水浒传")

    # 1. borrow anywhere: a Chongqing reader at a Chengdu desk, a Chengdu reader at a Chongqing desk
    borrowed = await checkout(client, lib["CDL"], "CDL-X1", CQ, "CDL-MAIN")
    assert borrowed.status == 201, await borrowed.text()
    cq_loan = await borrowed.json()
    assert (cq_loan["library"], cq_loan["owner_library"]) == ("CDL", "CDL")
    assert (await checkout(client, lib["CQL"], "CQL-X1", SC, "CQL-MAIN")).status == 201
    assert await item(demo, "CDL-X1") == ("on_loan", "CDL", "CDL-MAIN")

    # 2. return anywhere: CDL's copy comes back at SCL, travels home and is received
    back = await (await checkin(client, lib["SCL"], "CDL-X1", "SCL-MAIN")).json()
    assert (back["action"], back["destination"], back["item"]["status"]) == ("transit", "CDL-MAIN", "in_transit")
    assert back["loan"]["state"] == "returned"
    assert await transits(client, lib["SCL"], "SCL-MAIN", "outgoing") == [("CDL-X1", "CDL-MAIN")]
    assert await transits(client, lib["CDL"], "CDL-MAIN", "incoming") == [("CDL-X1", "CDL-MAIN")]
    flying = await report(client, admin, "transits")
    assert flying["in_transit"] == 1
    got = await receive(client, lib["CDL"], back["transit"]["id"])
    assert got["item"]["status"] == "available" and got["transit"]["state"] == "received"
    assert await transits(client, lib["CDL"], "CDL-MAIN", "incoming") == []
    # a copy returned at its own library is shelved
    home = await (await checkin(client, lib["CQL"], "CQL-X1", "CQL-MAIN")).json()
    assert (home["action"], home["destination"]) == ("shelve", "CQL-MAIN")

    # 3. request anywhere: picked up at CDL; the same city's copy (SCL) is targeted before the other city's
    req = await (await place(client, cq_me, "CDL-MAIN", work_id=work)).json()
    assert req["state"] == "targeted"
    assert await pull_list(client, lib["SCL"], "SCL-MAIN") == [("SCL-W1", "CDL-MAIN")]
    assert await pull_list(client, lib["CQL"], "CQL-MAIN") == []
    pulled = await (await checkin(client, lib["SCL"], "SCL-W1", "SCL-MAIN")).json()
    assert (pulled["action"], pulled["destination"], pulled["transit"]["reason"]) == ("transit", "CDL-MAIN", "hold")
    arrived = await receive(client, lib["CDL"], pulled["transit"]["id"])
    assert arrived["item"]["status"] == "on_hold_shelf"
    assert await inbox_kinds(client, demo, CQ) == ["circulation.request_ready"]
    # the copy on the hold shelf is kept for its reader
    other = await checkout(client, lib["CDL"], "SCL-W1", SC, "CDL-MAIN")
    assert (other.status, (await other.json())["code"]) == (409, "circulation.not_held_for_reader")
    picked = await checkout(client, lib["CDL"], "SCL-W1", CQ, "CDL-MAIN")
    assert picked.status == 201
    loan = await picked.json()
    mine = await (await client.get("/api/v1/me/requests", headers=cq_me)).json()
    assert [(r["id"], r["state"], r["loan_id"]) for r in mine["items"]] == [(req["id"], "fulfilled", loan["id"])]

    # 4. renew: once, by the reader; the second is over CDL's limit
    renewed = await client.post(f"/api/v1/circulation/loans/{loan['id']}/renewals", headers=cq_me)
    assert renewed.status == 200 and (await renewed.json())["renewals"] == 1
    limit = await client.post(f"/api/v1/circulation/loans/{loan['id']}/renewals", headers=cq_me)
    assert (limit.status, (await limit.json())["code"]) == (409, "circulation.renewal_limit")

    # 5. cancel at each stage, the copy ending right every time
    # queued (the only copy is lent): nothing moves
    assert (await checkout(client, lib["CDL"], "CDL-Q1", CQ, "CDL-MAIN")).status == 201
    queued = await (await place(client, sc_me, "SCL-MAIN", work_id=lonely)).json()
    assert queued["state"] == "queued"
    assert (await cancel(client, sc_me, queued["id"]))["state"] == "cancelled"
    assert (await item(demo, "CDL-Q1"))[0] == "on_loan"
    # targeted (CQL's copy, the only one on the shelf): it stays on the shelf, off the pull list
    targeted = await (await place(client, sc_me, "SCL-MAIN", work_id=work)).json()
    assert targeted["state"] == "targeted"
    assert await pull_list(client, lib["CQL"], "CQL-MAIN") == [("CQL-W1", "SCL-MAIN")]
    await cancel(client, lib["SCL"], targeted["id"])
    assert await pull_list(client, lib["CQL"], "CQL-MAIN") == []
    assert await item(demo, "CQL-W1") == ("available", "CQL", "CQL-MAIN")
    # in transit: the copy arrives at SCL for nobody and goes home again
    travelling = await (await place(client, sc_me, "SCL-MAIN", work_id=work)).json()
    sent = await (await checkin(client, lib["CQL"], "CQL-W1", "CQL-MAIN")).json()
    assert (sent["action"], sent["destination"]) == ("transit", "SCL-MAIN")
    assert (await cancel(client, sc_me, travelling["id"]))["state"] == "cancelled"
    at_scl = await receive(client, lib["SCL"], sent["transit"]["id"])
    assert at_scl["item"]["status"] == "in_transit"
    assert await transits(client, lib["CQL"], "CQL-MAIN", "incoming") == [("CQL-W1", "CQL-MAIN")]
    assert await transits(client, lib["SCL"], "SCL-MAIN", "outgoing") == [("CQL-W1", "CQL-MAIN")]
    incoming = (
        await (
            await client.get("/api/v1/circulation/transits", params={"service_point": "CQL-MAIN"}, headers=lib["CQL"])
        ).json()
    )["items"]
    assert (await receive(client, lib["CQL"], incoming[0]["id"]))["item"]["status"] == "available"
    # ready (picked up at CQL itself, where the copy is): it leaves the hold shelf for the open shelf
    ready = await (await place(client, sc_me, "CQL-MAIN", work_id=work)).json()
    shelved = await (await checkin(client, lib["CQL"], "CQL-W1", "CQL-MAIN")).json()
    assert (shelved["action"], shelved["item"]["status"]) == ("hold_shelf", "on_hold_shelf")
    assert (await cancel(client, sc_me, ready["id"]))["state"] == "cancelled"
    assert await item(demo, "CQL-W1") == ("available", "CQL", "CQL-MAIN")
    assert await inbox_kinds(client, demo, SC) == ["circulation.request_ready"]

    # the federation's figures: three loans by a Chongqing reader in Chengdu, one the other way, all cross-city
    by_library = await report(client, admin, "loans-by-library")
    pairs = {(p["library"], p["home_library"]): (p["loans"], p["active"]) for p in by_library["items"]}
    assert pairs == {("CDL", "CQL"): (3, 2), ("CQL", "SCL"): (1, 0)}
    month = utcnow().strftime("%Y-%m")
    crossing = await report(client, admin, "cross-city-loans")
    assert crossing["months"] == [{"month": month, "loans": 4, "cross_city": 4}]
    assert (await report(client, admin, "transits"))["in_transit"] == 0
    fills = {r["pickup_library"]: r for r in (await report(client, admin, "request-fill-time"))["items"]}
    assert (fills["CDL"]["placed"], fills["CDL"]["fulfilled"], fills["CDL"]["open"]) == (1, 1, 0)
    assert (fills["SCL"]["placed"], fills["SCL"]["fulfilled"], fills["SCL"]["open"]) == (3, 0, 0)
    assert await item(demo, "SCL-W1") == ("on_loan", "CDL", "CDL-MAIN")
