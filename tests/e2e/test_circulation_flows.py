"""Circulation through HTTP: borrow anywhere, return anywhere, transits, renewals, idempotency, bad input."""

from __future__ import annotations

import asyncio

from sqlalchemy import delete, select

from federation.audit.models import AuditEntry
from federation.db import OutboxMessage
from federation.demo import RESIDENTS
from federation.identity import service as identity
from federation.identity.models import CredentialStatus, IdentifierType
from library.catalog.models import ItemRow
from library.circulation import policies
from library.circulation.models import Borrower, ItemState, LibraryPolicy, Loan, LoanPolicy, Reader
from tests.circulation_support import add_copies, snapshot
from tests.conftest import token_for

CQ = RESIDENTS[0]  # 张伟, Chongqing, home library CQL
CQ2 = RESIDENTS[1]
SC = RESIDENTS[5]  # 杨磊, Sichuan, home library SCL


def ss(resident) -> dict[str, str]:
    return {"type": "social_security_card", "value": resident.ss_card}


async def checkout(client, headers, barcode, credential, desk, **kw):
    body = {"item_barcode": barcode, "credential": credential, "service_point": desk}
    return await client.post("/api/v1/circulation/checkouts", json=body, headers={**headers, **kw.get("extra", {})})


async def checkin(client, headers, barcode, desk):
    return await client.post(
        "/api/v1/circulation/checkins", json={"item_barcode": barcode, "service_point": desk}, headers=headers
    )


async def person_id(svc, resident) -> str:
    async with svc.db.reader() as s:
        inp = identity.IdentifierInput(IdentifierType.ID_NUMBER, resident.id_number)
        return (await identity.resolve_credential(s, svc.cipher, inp)).id


async def audit_entries(svc, action):
    async with svc.db.reader() as s:
        return list((await s.execute(select(AuditEntry).where(AuditEntry.action == action))).scalars())


async def events(svc, topic):
    async with svc.db.reader() as s:
        rows = (await s.execute(select(OutboxMessage.payload).where(OutboxMessage.topic == topic))).scalars()
        return list(rows)


async def test_borrow_anywhere_registers_the_reader_once(client, demo):
    items = await add_copies(demo, "SCL", ["SCL-0001", "SCL-0002"])
    scl = await token_for(client, "librarian@SCL")
    resp = await checkout(client, scl, "SCL-0001", ss(CQ), "SCL-MAIN")
    assert resp.status == 201, await resp.text()
    loan = await resp.json()
    assert (loan["library"], loan["owner_library"], loan["state"], loan["renewals"]) == ("SCL", "SCL", "active", 0)
    assert loan["checkout_service_point"] == "SCL-MAIN"
    resp = await checkout(client, scl, "SCL-0002", {"type": "id_number", "value": CQ.id_number}, "SCL-B1")
    assert resp.status == 201, await resp.text()

    pid = await person_id(demo, CQ)
    async with demo.db.reader() as s:
        readers = list((await s.execute(select(Reader).where(Reader.person_id == pid))).scalars())
        catalog = dict((await s.execute(select(ItemRow.barcode, ItemRow.status).where(ItemRow.library == "SCL"))).all())
    assert [(r.library, r.category, r.active_loans) for r in readers] == [("SCL", "adult", 2)]
    assert catalog == {"SCL-0001": "on_loan", "SCL-0002": "on_loan"}
    entries = await audit_entries(demo, "circulation.checkout")
    assert [e.subject_person_id for e in entries] == [pid, pid]
    assert entries[0].details["loan"] == loan["id"]
    work_id = items["SCL-0001"].work_id
    assert {"work_ids": [work_id]} in await events(demo, "catalog.works_changed")
    assert any(e["loan_id"] == loan["id"] for e in await events(demo, "circulation.checked_out"))

    mine = await client.get("/api/v1/me/loans", headers=await token_for(client, CQ.id_number))
    assert mine.status == 200
    got = (await mine.json())["items"]
    assert sorted(x["barcode"] for x in got) == ["SCL-0001", "SCL-0002"]
    assert {x["title"] for x in got} == {"三体"}
    other = await client.get("/api/v1/me/loans", headers=await token_for(client, SC.id_number))
    assert (await other.json())["items"] == []


async def test_library_card_with_and_without_institution(client, demo):
    await add_copies(demo, "CQL", ["CQL-0100", "CQL-0101"])
    cql = await token_for(client, "librarian@CQL")
    card = f"{CQ.home}{CQ.ss_card[-6:]}"
    resp = await checkout(
        client, cql, "CQL-0100", {"type": "library_card", "value": card, "institution": "CQL"}, "CQL-MAIN"
    )
    assert resp.status == 201, await resp.text()
    resp = await checkout(client, cql, "CQL-0101", {"type": "library_card", "value": card}, "CQL-MAIN")
    assert resp.status == 201, await resp.text()
    pid = await person_id(demo, CQ)
    async with demo.db.reader() as s:
        assert {loan.person_id for loan in (await s.execute(select(Loan))).scalars()} == {pid}


async def test_return_anywhere_travels_home_by_transit(client, demo):
    await add_copies(demo, "CQL", ["CQL-0001"])
    cql = await token_for(client, "librarian@CQL")
    cdl = await token_for(client, "librarian@CDL")
    lent = await (await checkout(client, cql, "CQL-0001", ss(CQ), "CQL-B1")).json()
    assert lent["title"] == "三体"  # the desk's screen and receipt name the book

    resp = await checkin(client, cdl, "CQL-0001", "CDL-B1")
    assert resp.status == 200, await resp.text()
    out = await resp.json()
    assert (out["action"], out["destination"], out["title"], out["loan"]["title"]) == (
        "transit",
        "CQL-MAIN",
        "三体",
        "三体",
    )
    assert out["loan"]["id"] == lent["id"] and out["loan"]["state"] == "returned"
    assert out["loan"]["checkin_service_point"] == "CDL-B1"
    assert out["item"]["status"] == "in_transit"
    transit = out["transit"]
    assert (transit["from_service_point"], transit["to_service_point"], transit["state"]) == (
        "CDL-B1",
        "CQL-MAIN",
        "in_transit",
    )

    incoming = await client.get(
        "/api/v1/circulation/transits", params={"service_point": "CQL-MAIN", "direction": "incoming"}, headers=cql
    )
    assert [t["id"] for t in (await incoming.json())["items"]] == [transit["id"]]
    outgoing = await client.get(
        "/api/v1/circulation/transits", params={"service_point": "CDL-B1", "direction": "outgoing"}, headers=cdl
    )
    assert [t["id"] for t in (await outgoing.json())["items"]] == [transit["id"]]
    # not lendable while travelling, and not CDL's to receive
    assert (await checkout(client, cql, "CQL-0001", ss(CQ2), "CQL-MAIN")).status == 409
    resp = await client.post(f"/api/v1/circulation/transits/{transit['id']}/receipt", json={}, headers=cdl)
    assert (resp.status, (await resp.json())["code"]) == (403, "circulation.wrong_library")

    resp = await client.post(f"/api/v1/circulation/transits/{transit['id']}/receipt", json={}, headers=cql)
    assert resp.status == 200, await resp.text()
    got = await resp.json()
    assert got["transit"]["state"] == "received"
    assert (got["item"]["status"], got["item"]["current_library"], got["item"]["current_service_point"]) == (
        "available",
        "CQL",
        "CQL-MAIN",
    )
    again = await client.post(f"/api/v1/circulation/transits/{transit['id']}/receipt", json={}, headers=cql)
    assert (again.status, (await again.json())["code"]) == (409, "circulation.transit_closed")
    incoming = await client.get("/api/v1/circulation/transits", params={"service_point": "CQL-MAIN"}, headers=cql)
    assert (await incoming.json())["items"] == []

    pid = await person_id(demo, CQ)
    assert [e.subject_person_id for e in await audit_entries(demo, "circulation.checkin")] == [pid]
    assert [e.subject_person_id for e in await audit_entries(demo, "circulation.transit_receipt")] == [pid]
    async with demo.db.reader() as s:
        reader = (await s.execute(select(Reader).where(Reader.person_id == pid))).scalar_one()
        status = (await s.execute(select(ItemRow.status).where(ItemRow.barcode == "CQL-0001"))).scalar_one()
    assert reader.active_loans == 0
    assert status == "available"
    assert (await checkout(client, cql, "CQL-0001", ss(CQ2), "CQL-MAIN")).status == 201


async def test_return_at_the_owner_shelves_and_a_floating_copy_stays(client, demo):
    await add_copies(demo, "CQL", ["CQL-0002"])
    await add_copies(demo, "CDL", ["CDL-0001"])
    cql, cdl, scl = [await token_for(client, f"librarian@{c}") for c in ("CQL", "CDL", "SCL")]
    assert (await checkout(client, cql, "CQL-0002", ss(CQ), "CQL-MAIN")).status == 201
    out = await (await checkin(client, cql, "CQL-0002", "CQL-B1")).json()
    assert (out["action"], out["destination"], out["transit"], out["item"]["status"]) == (
        "shelve",
        "CQL-B1",
        None,
        "available",
    )
    # an available copy at home needs no check-in
    resp = await checkin(client, cql, "CQL-0002", "CQL-MAIN")
    assert (resp.status, (await resp.json())["code"]) == (409, "circulation.not_on_loan")

    async with demo.db.uow() as uow:
        uow.session.add(LibraryPolicy(library="CDL", floating=True))
        await uow.commit()
    assert (await checkout(client, cdl, "CDL-0001", ss(SC), "CDL-MAIN")).status == 201
    out = await (await checkin(client, scl, "CDL-0001", "SCL-B1")).json()
    assert (out["action"], out["destination"], out["item"]["current_library"]) == ("shelve", "SCL-B1", "SCL")
    # it lives at SCL now: SCL lends it, CDL cannot
    resp = await checkout(client, cdl, "CDL-0001", ss(SC), "CDL-MAIN")
    assert (resp.status, (await resp.json())["code"]) == (409, "circulation.item_not_here")
    assert (await checkout(client, scl, "CDL-0001", ss(SC), "SCL-MAIN")).status == 201


async def test_returning_a_loan_older_than_the_federation_counter_counts_it_from_zero(client, demo):
    """A loan made before its person had a federation-wide counter row (older data): the return makes the row at
    zero, never at minus one, and the next checkout counts from there."""
    await add_copies(demo, "CQL", ["CQL-OLD1", "CQL-OLD2"])
    cql = await token_for(client, "librarian@CQL")
    assert (await checkout(client, cql, "CQL-OLD1", ss(CQ), "CQL-MAIN")).status == 201
    pid = await person_id(demo, CQ)
    async with demo.db.uow() as uow:
        await uow.session.execute(delete(Borrower).where(Borrower.person_id == pid))
        await uow.commit()
    assert (await checkin(client, cql, "CQL-OLD1", "CQL-MAIN")).status == 200
    async with demo.db.reader() as s:
        assert (await s.get(Borrower, pid)).active_loans == 0
    assert (await checkout(client, cql, "CQL-OLD2", ss(CQ), "CQL-MAIN")).status == 201
    async with demo.db.reader() as s:
        assert (await s.get(Borrower, pid, populate_existing=True)).active_loans == 1


async def test_renewals_follow_the_policy_and_belong_to_the_reader(client, demo):
    await add_copies(demo, "CQL", ["CQL-0003", "CQL-0004"])
    cql = await token_for(client, "librarian@CQL")
    lent = await (await checkout(client, cql, "CQL-0003", ss(CQ), "CQL-MAIN")).json()
    me = await token_for(client, CQ.id_number)
    stranger = await token_for(client, CQ2.id_number)
    url = f"/api/v1/circulation/loans/{lent['id']}/renewals"

    resp = await client.post(url, headers=stranger)
    assert (resp.status, (await resp.json())["code"]) == (404, "circulation.loan_not_found")
    resp = await client.post(url, headers=me)
    assert resp.status == 200, await resp.text()
    renewed = await resp.json()
    assert renewed["renewals"] == 1 and renewed["due_at"] >= lent["due_at"]
    before = await snapshot(demo)
    for who in (me, cql):
        resp = await client.post(url, headers=who)
        assert (resp.status, (await resp.json())["code"]) == (409, "circulation.renewal_limit")
    assert await snapshot(demo) == before
    assert [e.subject_person_id for e in await audit_entries(demo, "circulation.renewal")] == [
        await person_id(demo, CQ)
    ]

    # policies are data: CQL gives adults two renewals of 14 days on books
    async with demo.db.uow() as uow:
        uow.session.add(
            LoanPolicy(library="CQL", reader_category="adult", item_type="book", loan_days=14, max_renewals=2)
        )
        await uow.commit()
    resp = await client.post(url, headers=cql)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["renewals"] == 2
    other = await (await checkout(client, cql, "CQL-0004", ss(CQ), "CQL-MAIN")).json()
    days = (
        __import__("datetime").datetime.fromisoformat(other["due_at"])
        - __import__("datetime").datetime.fromisoformat(other["checked_out_at"])
    ).days
    assert days == 14

    # a returned loan cannot be renewed
    await checkin(client, cql, "CQL-0004", "CQL-MAIN")
    resp = await client.post(f"/api/v1/circulation/loans/{other['id']}/renewals", headers=cql)
    assert (resp.status, (await resp.json())["code"]) == (409, "circulation.loan_not_active")


async def test_a_retried_checkout_makes_one_loan(client, demo):
    await add_copies(demo, "CQL", ["CQL-0005", "CQL-0006"])
    cql = await token_for(client, "librarian@CQL")
    key = {"Idempotency-Key": "desk-3-scan-0005"}
    answers = []
    for _ in range(5):
        resp = await checkout(client, cql, "CQL-0005", ss(CQ), "CQL-MAIN", extra=key)
        answers.append((resp.status, await resp.json()))
    assert {s for s, _ in answers} == {201}
    assert all(body == answers[0][1] for _, body in answers)
    async with demo.db.reader() as s:
        assert len(list((await s.execute(select(Loan))).scalars())) == 1
    assert len(await audit_entries(demo, "circulation.checkout")) == 1

    # the same key for another request is refused and changes nothing
    before = await snapshot(demo)
    resp = await checkout(client, cql, "CQL-0006", ss(CQ), "CQL-MAIN", extra=key)
    assert (resp.status, (await resp.json())["code"]) == (422, "idempotency.key_reused")
    assert await snapshot(demo) == before
    # keys are per caller: another librarian's identical key is theirs
    scl = await token_for(client, "librarian@SCL")
    await add_copies(demo, "SCL", ["SCL-0005"])
    assert (await checkout(client, scl, "SCL-0005", ss(CQ), "SCL-MAIN", extra=key)).status == 201

    # retries racing each other still make one loan and one answer
    key2 = {"Idempotency-Key": "race-0006"}
    results = await asyncio.gather(
        *(checkout(client, cql, "CQL-0006", ss(CQ2), "CQL-MAIN", extra=key2) for _ in range(5))
    )
    bodies = [(r.status, await r.json()) for r in results]
    assert {s for s, _ in bodies} == {201}
    assert len({b["id"] for _, b in bodies}) == 1


async def test_bad_input_is_refused_clearly_and_changes_nothing(client, demo):
    await add_copies(demo, "CQL", ["CQL-0007", "CQL-0008"])
    await add_copies(demo, "SCL", ["SCL-0007"])
    cql = await token_for(client, "librarian@CQL")
    scl = await token_for(client, "librarian@SCL")
    lent = await (await checkout(client, cql, "CQL-0008", ss(CQ), "CQL-MAIN")).json()
    async with demo.db.uow() as uow:
        await identity.set_credential_status(
            uow,
            demo,
            identity.IdentifierInput(IdentifierType.SOCIAL_SECURITY_CARD, SC.ss_card),
            CredentialStatus.LOST,
            actor="test",
        )
        await uow.commit()
    stranger = await token_for(client, CQ2.id_number)
    before = await snapshot(demo)

    cases = [
        (cql, "NO-SUCH-BARCODE", ss(CQ), "CQL-MAIN", 404, "circulation.item_not_found"),
        (
            cql,
            "CQL-0007",
            {"type": "social_security_card", "value": "CQ9999999"},
            "CQL-MAIN",
            404,
            "identity.unknown_credential",
        ),
        (cql, "CQL-0007", ss(SC), "CQL-MAIN", 403, "identity.credential_inactive"),
        (scl, "CQL-0007", ss(CQ), "SCL-MAIN", 409, "circulation.item_not_here"),
        (cql, "CQL-0007", ss(CQ), "SCL-MAIN", 403, "circulation.wrong_library"),
        (cql, "CQL-0007", ss(CQ), "NOWHERE", 404, "circulation.unknown_service_point"),
        (cql, "CQL-0007", ss(CQ), "CQH1-MAIN", 422, "circulation.not_a_library"),
        (cql, "CQL-0008", ss(CQ2), "CQL-MAIN", 409, "circulation.item_unavailable"),
    ]
    for headers, barcode, cred, desk, status, code in cases:
        resp = await checkout(client, headers, barcode, cred, desk)
        assert resp.content_type == "application/problem+json", (barcode, desk)
        assert (resp.status, (await resp.json())["code"]) == (status, code), (barcode, desk, code)

    resp = await client.post(
        "/api/v1/circulation/checkouts",
        json={
            "item_barcode": "CQL-0007",
            "credential": {"type": "passport", "value": "x"},
            "service_point": "CQL-MAIN",
        },
        headers=cql,
    )
    assert (resp.status, (await resp.json())["code"]) == (422, "validation_failed")
    resp = await checkin(client, scl, "CQL-0007", "CQL-MAIN")
    assert (resp.status, (await resp.json())["code"]) == (403, "circulation.wrong_library")
    resp = await client.post(f"/api/v1/circulation/loans/{lent['id']}/renewals", headers=stranger)
    assert (resp.status, (await resp.json())["code"]) == (404, "circulation.loan_not_found")
    resp = await client.post("/api/v1/circulation/transits/nope/receipt", json={}, headers=cql)
    assert (resp.status, (await resp.json())["code"]) == (404, "circulation.transit_not_found")
    resp = await client.get("/api/v1/circulation/transits", params={"service_point": "SCL-MAIN"}, headers=cql)
    assert (resp.status, (await resp.json())["code"]) == (403, "circulation.wrong_library")
    assert await snapshot(demo) == before


async def test_limits_and_blocks(client, demo):
    await add_copies(demo, "CQL", ["CQL-0010", "CQL-0011", "CQL-0012"])
    await add_copies(demo, "SCL", ["SCL-0010"])
    cql = await token_for(client, "librarian@CQL")
    scl = await token_for(client, "librarian@SCL")
    async with demo.db.uow() as uow:
        await policies.set_federation(uow.session, max_total_loans=2)
        uow.session.add(LoanPolicy(library="CQL", loan_days=21, max_renewals=1, max_loans=1))
        await uow.commit()
    assert (await checkout(client, cql, "CQL-0010", ss(CQ), "CQL-MAIN")).status == 201
    resp = await checkout(client, cql, "CQL-0011", ss(CQ), "CQL-MAIN")
    body = await resp.json()
    assert (resp.status, body["code"], body["scope"]) == (409, "circulation.limit_reached", "library")
    assert (await checkout(client, scl, "SCL-0010", ss(CQ), "SCL-MAIN")).status == 201
    async with demo.db.uow() as uow:
        await policies.set_federation(uow.session, max_total_loans=2)
        uow.session.add(LoanPolicy(library="CQL", reader_category="adult", loan_days=21, max_renewals=1, max_loans=5))
        await uow.commit()
    before = await snapshot(demo)
    resp = await checkout(client, cql, "CQL-0011", ss(CQ), "CQL-MAIN")
    body = await resp.json()
    assert (resp.status, body["code"], body["scope"]) == (409, "circulation.limit_reached", "federation")
    assert await snapshot(demo) == before

    pid = await person_id(demo, CQ2)
    assert (await checkout(client, cql, "CQL-0011", ss(CQ2), "CQL-MAIN")).status == 201
    async with demo.db.uow() as uow:
        r = (await uow.session.execute(select(Reader).where(Reader.person_id == pid))).scalar_one()
        r.blocked, r.block_reason = True, "overdue fines"
        await uow.commit()
    before = await snapshot(demo)
    resp = await checkout(client, cql, "CQL-0012", ss(CQ2), "CQL-MAIN")
    assert (resp.status, (await resp.json())["code"]) == (409, "circulation.reader_blocked")
    assert await snapshot(demo) == before
    async with demo.db.reader() as s:
        assert (await s.execute(select(ItemState.status).where(ItemState.barcode == "CQL-0012"))).first() is None
