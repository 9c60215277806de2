"""Circulation's reports through HTTP: exact figures over known loans and transits, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import update

from federation.db import utcnow
from federation.demo import RESIDENTS
from library.circulation.models import Loan, Transit
from tests.circulation_support import add_copies
from tests.conftest import token_for

CQ, CQ2, SC, CD = RESIDENTS[0], RESIDENTS[1], RESIDENTS[5], RESIDENTS[7]  # homes CQL, CQL, SCL, CDL
BASE = "/api/v1/circulation/reports"


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=dt.UTC)


async def lend(client, headers, barcode, resident, desk) -> None:
    body = {
        "item_barcode": barcode,
        "credential": {"type": "social_security_card", "value": resident.ss_card},
        "service_point": desk,
    }
    resp = await client.post("/api/v1/circulation/checkouts", json=body, headers=headers)
    assert resp.status == 201, await resp.text()


async def give_back(client, headers, barcode, desk) -> dict:
    resp = await client.post(
        "/api/v1/circulation/checkins", json={"item_barcode": barcode, "service_point": desk}, headers=headers
    )
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def world(client, demo) -> dict[str, dict[str, str]]:
    """Five loans over three months (four cross-city... see each line), two returned away from home (transits)."""
    await add_copies(demo, "CQL", ["CQL-0001", "CQL-0002"])
    await add_copies(demo, "SCL", ["SCL-0001", "SCL-0002"])
    await add_copies(demo, "CDL", ["CDL-0001"])
    h = {lib: await token_for(client, f"librarian@{lib}") for lib in ("CQL", "SCL", "CDL")}
    h["admin"] = await token_for(client, "admin@federation")
    await lend(client, h["CQL"], "CQL-0001", CQ, "CQL-MAIN")  # home reader
    await lend(client, h["CQL"], "CQL-0002", SC, "CQL-MAIN")  # Chengdu reader in Chongqing
    await lend(client, h["SCL"], "SCL-0001", CQ, "SCL-MAIN")  # Chongqing reader in Chengdu
    await lend(client, h["SCL"], "SCL-0002", CD, "SCL-B1")  # CDL reader at SCL: both Chengdu
    await lend(client, h["CDL"], "CDL-0001", CQ2, "CDL-B1")  # Chongqing reader in Chengdu
    when = {
        "CQL-0001": utc(2026, 1, 15, 9),
        "CQL-0002": utc(2026, 1, 20, 9),
        "SCL-0001": utc(2026, 2, 3, 9),
        "SCL-0002": utc(2026, 2, 28, 23, 30),  # still February in UTC (March in Beijing time)
        "CDL-0001": utc(2026, 3, 1, 0, 10),
    }
    async with demo.db.uow() as uow:
        for barcode, at in when.items():
            await uow.session.execute(update(Loan).where(Loan.barcode == barcode).values(checked_out_at=at))
        await uow.commit()
    late = (await give_back(client, h["SCL"], "CQL-0002", "SCL-MAIN"))["transit"]
    await give_back(client, h["CQL"], "CDL-0001", "CQL-B1")
    async with demo.db.uow() as uow:
        await uow.session.execute(
            update(Transit).where(Transit.id == late["id"]).values(created_at=utcnow() - dt.timedelta(days=5))
        )
        await uow.commit()
    h["late_transit"] = late
    return h


async def get(client, path, headers, **params):
    resp = await client.get(f"{BASE}/{path}", params=params, headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_loans_by_library(client, demo):
    h = await world(client, demo)
    got = await get(client, "loans-by-library", h["admin"])
    assert got["total"] == 5
    assert [(r["library"], r["home_library"], r["loans"], r["active"]) for r in got["items"]] == [
        ("CDL", "CQL", 1, 0),
        ("CQL", "CQL", 1, 1),
        ("CQL", "SCL", 1, 0),
        ("SCL", "CDL", 1, 1),
        ("SCL", "CQL", 1, 1),
    ]
    # a librarian reads every library's aggregate rows too
    assert await get(client, "loans-by-library", h["CDL"]) == got

    feb = await get(client, "loans-by-library", h["CQL"], since="2026-02-01", until="2026-02-28")
    assert (feb["since"], feb["until"], feb["total"]) == ("2026-02-01", "2026-02-28", 2)
    assert [(r["library"], r["home_library"], r["loans"]) for r in feb["items"]] == [
        ("SCL", "CDL", 1),
        ("SCL", "CQL", 1),
    ]
    one_day = await get(client, "loans-by-library", h["CQL"], since="2026-01-15", until="2026-01-15")
    assert [(r["library"], r["home_library"], r["loans"]) for r in one_day["items"]] == [("CQL", "CQL", 1)]
    assert (await get(client, "loans-by-library", h["CQL"], since="2027-01-01"))["items"] == []


async def test_cross_city_loans_per_month(client, demo):
    h = await world(client, demo)
    got = await get(client, "cross-city-loans", h["SCL"])
    assert [(m["month"], m["loans"], m["cross_city"]) for m in got["months"]] == [
        ("2026-01", 2, 1),
        ("2026-02", 2, 1),
        ("2026-03", 1, 1),
    ]
    assert [(f["month"], f["lending_city"], f["home_city"], f["loans"]) for f in got["flows"]] == [
        ("2026-01", "重庆", "成都", 1),
        ("2026-02", "成都", "重庆", 1),
        ("2026-03", "成都", "重庆", 1),
    ]
    since_feb = await get(client, "cross-city-loans", h["admin"], since="2026-02-01")
    assert [(m["month"], m["loans"], m["cross_city"]) for m in since_feb["months"]] == [
        ("2026-02", 2, 1),
        ("2026-03", 1, 1),
    ]


async def test_transits_in_flight_and_overdue(client, demo):
    h = await world(client, demo)
    got = await get(client, "transits", h["admin"])
    assert (got["overdue_days"], got["in_transit"], got["overdue"]) == (3, 2, 1)
    assert [(r["from_library"], r["to_library"], r["in_transit"], r["overdue"]) for r in got["routes"]] == [
        ("CQL", "CDL", 1, 0),
        ("SCL", "CQL", 1, 1),
    ]
    [late] = got["overdue_transits"]
    assert (late["id"], late["barcode"], late["to_service_point"]) == (h["late_transit"]["id"], "CQL-0002", "CQL-MAIN")
    oldest = dt.datetime.fromisoformat(got["routes"][1]["oldest"])
    assert dt.timedelta(days=4, hours=23) < utcnow() - oldest < dt.timedelta(days=5, hours=1)

    patient = await get(client, "transits", h["CQL"], overdue_days=10)
    assert (patient["in_transit"], patient["overdue"], patient["overdue_transits"]) == (2, 0, [])

    # received: no longer in flight
    resp = await client.post(f"/api/v1/circulation/transits/{late['id']}/receipt", json={}, headers=h["CQL"])
    assert resp.status == 200, await resp.text()
    after = await get(client, "transits", h["admin"])
    assert (after["in_transit"], after["overdue"]) == (1, 0)


async def test_reports_refuse_bad_input_and_other_callers(client, demo):
    admin = await token_for(client, "admin@federation")
    resp = await client.get(
        f"{BASE}/loans-by-library", params={"since": "2026-03-01", "until": "2026-02-01"}, headers=admin
    )
    assert resp.status == 422
    resp = await client.get(f"{BASE}/transits", params={"overdue_days": "-1"}, headers=admin)
    assert resp.status == 422
    empty = await get(client, "cross-city-loans", admin)
    assert (empty["months"], empty["flows"]) == ([], [])
    doctor = await token_for(client, "doctor@SCH1")
    assert (await client.get(f"{BASE}/transits", headers=doctor)).status == 403
    resident = await token_for(client, CQ.id_number)
    assert (await client.get(f"{BASE}/loans-by-library", headers=resident)).status == 403


async def test_request_fill_time(client, demo):
    from federation.db import new_id
    from federation.identity import service as identity
    from federation.identity.models import IdentifierType
    from library.circulation.models import Reader, Request

    async with demo.db.uow() as uow:
        s = uow.session
        readers = {}
        for lib, resident in (("CQL", CQ), ("SCL", SC)):
            inp = identity.IdentifierInput(IdentifierType.ID_NUMBER, resident.id_number)
            person = await identity.resolve_credential(s, demo.cipher, inp)
            readers[lib] = Reader(id=new_id(), person_id=person.id, library=lib, category="adult", active_loans=0)
            s.add(readers[lib])
        await s.flush()

        def req(lib, created, state, ready_hours=None):
            return Request(
                work_id="w1",
                person_id=readers[lib].person_id,
                reader_id=readers[lib].id,
                pickup_library=lib,
                pickup_service_point=f"{lib}-MAIN",
                state=state,
                created_at=created,
                ready_at=created + dt.timedelta(hours=ready_hours) if ready_hours is not None else None,
            )

        s.add_all(
            [
                req("CQL", utc(2026, 1, 10), "fulfilled", 6),
                req("CQL", utc(2026, 1, 11), "ready", 30),
                req("CQL", utc(2026, 1, 12), "queued"),
                req("SCL", utc(2026, 2, 1), "expired", 2),
                req("SCL", utc(2026, 2, 2), "cancelled"),
            ]
        )
        await uow.commit()
    admin = await token_for(client, "admin@federation")
    got = await get(client, "request-fill-time", admin)
    rows = [
        (r["pickup_library"], r["placed"], r["filled"], r["fulfilled"], r["open"], r["avg_hours"], r["max_hours"])
        for r in got["items"]
    ]
    assert rows == [("CQL", 3, 2, 1, 2, 18.0, 30.0), ("SCL", 2, 1, 0, 0, 2.0, 2.0)]
    feb = await get(client, "request-fill-time", await token_for(client, "librarian@CDL"), since="2026-02-01")
    assert [(r["pickup_library"], r["placed"]) for r in feb["items"]] == [("SCL", 2)]
