"""Social security through the whole application: a card reported lost stops the next checkout (measured end to
end through the scheduled sync), linking a card, the resident's summary with consent, the connectors' health."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import ClientSession
from sqlalchemy import select

from connectors.framework import service as connectors
from connectors.social_security import sandbox as ss_sandbox
from connectors.social_security import tasks as ss_tasks
from federation.audit.models import AuditEntry
from federation.demo import RESIDENTS
from federation.jobs.runner import SCHEDULE_KEY
from federation.members import service as members
from tests.circulation_support import add_copies
from tests.conftest import token_for

CQ = RESIDENTS[0]  # 张伟, Chongqing
ODD = RESIDENTS[4]  # 陈静: her pension is moving from Chongqing to Chengdu


@pytest.fixture
async def partner():
    async with ss_sandbox.started_app() as url:
        yield url


@pytest.fixture
async def world(demo, partner):
    async with demo.db.uow() as uow:
        await members.upsert(
            uow, members.NewInstitution("CQSI", "重庆市社会保险事务中心", "system", system_kind="social_security")
        )
        await connectors.configure(
            uow,
            demo,
            "ss-chongqing",
            kind="social_security",
            member_code="CQSI",
            config={"base_url": partner, "backoff_base_s": 0.01, "read_timeout_s": 3},
            secrets={"api_key": ss_sandbox.API_KEY},
            actor="test",
        )
        await uow.commit()
    return demo


async def sandbox_event(url: str, **event) -> None:
    async with ClientSession() as s, s.post(f"{url}/_sandbox/card-events", json=event) as r:
        assert r.status == 201, await r.text()


async def checkout(client, headers, barcode: str, card: str):
    body = {
        "item_barcode": barcode,
        "credential": {"type": "social_security_card", "value": card},
        "service_point": "SCL-MAIN",
    }
    return await client.post("/api/v1/circulation/checkouts", json=body, headers=headers)


def test_the_card_feed_is_scheduled_at_most_every_30_seconds(svc):
    assert svc.extras[SCHEDULE_KEY][ss_tasks.KIND.job_kind] <= 30


async def test_a_lost_card_stops_the_next_checkout_through_the_scheduled_sync(client, world, partner):
    # the embedded runner queues the feed on its real schedule; the figure measured is the whole chain: partner
    # event -> scheduled job -> credential -> refused checkout
    await add_copies(world, "SCL", ["SSL-0001", "SSL-0002"])
    desk = await token_for(client, "librarian@SCL")
    admin = await token_for(client, "admin@federation")
    assert (await checkout(client, desk, "SSL-0001", CQ.ss_card)).status == 201

    started = time.monotonic()
    await sandbox_event(partner, type="lost", card_number=CQ.ss_card)
    while True:
        resp = await client.get("/api/v1/connectors", headers=admin)
        assert ss_sandbox.API_KEY not in await resp.text()  # secrets never leave the database
        health = {c["name"]: c for c in (await resp.json())["items"]}["ss-chongqing"]
        if health["watermark"] == "1":
            break
        assert time.monotonic() - started < 60, f"the card feed did not run within a minute: {health}"
        await asyncio.sleep(0.2)
    resp = await checkout(client, desk, "SSL-0002", CQ.ss_card)
    delay = time.monotonic() - started
    assert resp.status == 403
    assert (await resp.json())["code"] == "identity.credential_inactive"
    assert delay < 60
    print(f"lost card -> refused checkout: {delay:.1f} s")
    # the run's counts are written when the run ends, a moment after its data and watermark were committed
    deadline = time.monotonic() + 30
    while health["last_counts"].get("applied") != 1:
        assert time.monotonic() < deadline, f"the run's counts never showed the event: {health}"
        await asyncio.sleep(0.2)
        resp = await client.get("/api/v1/connectors", headers=admin)
        health = {c["name"]: c for c in (await resp.json())["items"]}["ss-chongqing"]
    assert health["circuit_state"] == "closed"
    assert health["last_success_at"] and health["kind"] == "social_security" and health["member_code"] == "CQSI"


async def test_an_admin_starts_a_sync_as_a_job(client, world, partner):
    await sandbox_event(partner, type="cancelled", card_number=RESIDENTS[2].ss_card)
    admin = await token_for(client, "admin@federation")
    resp = await client.post("/api/v1/connectors/ss-chongqing/syncs", headers=admin)
    assert resp.status == 202
    job_id = (await resp.json())["job_id"]
    for _ in range(100):
        job = await (await client.get(f"/api/v1/jobs/{job_id}", headers=admin)).json()
        if job["state"] in ("succeeded", "failed"):
            break
        await asyncio.sleep(0.1)
    assert job["state"] == "succeeded", job
    assert job["result"]["applied"] == 1
    assert (await client.post("/api/v1/connectors/nope/syncs", headers=admin)).status == 404


async def test_a_resident_links_their_own_card_and_no_one_else_s(client, world):
    me = await token_for(client, CQ.id_number)
    body = {"card_number": CQ.ss_card, "name": CQ.name, "id_number": CQ.id_number}
    resp = await client.post("/api/v1/social-security/card-verifications", json=body, headers=me)
    assert resp.status == 201, await resp.text()
    out = await resp.json()
    assert out["outcome"] == "already_linked" and out["card"].endswith(CQ.ss_card[-4:]) and CQ.ss_card not in str(out)

    other = RESIDENTS[1]
    theirs = {"card_number": other.ss_card, "name": other.name, "id_number": other.id_number}
    resp = await client.post("/api/v1/social-security/card-verifications", json=theirs, headers=me)
    assert (resp.status, (await resp.json())["code"]) == (403, "social_security.not_yours")

    wrong_name = {**body, "name": "李四"}
    resp = await client.post("/api/v1/social-security/card-verifications", json=wrong_name, headers=me)
    problem = await resp.json()
    assert (resp.status, problem["code"]) == (422, "social_security.card_mismatch")
    assert CQ.id_number not in str(problem)

    unknown = {**body, "card_number": "ZZ0000000"}
    resp = await client.post("/api/v1/social-security/card-verifications", json=unknown, headers=me)
    assert (resp.status, (await resp.json())["code"]) == (404, "social_security.card_not_found")

    async with world.db.reader() as s:
        q = select(AuditEntry).where(AuditEntry.action == "social_security.card_verified")
        entries = list((await s.execute(q)).scalars())
    assert len(entries) == 4
    assert all(CQ.id_number not in str(e.details) and CQ.ss_card not in str(e.details) for e in entries)


async def served(url: str) -> int:
    async with ClientSession() as s, s.get(f"{url}/_sandbox/requests") as r:
        return (await r.json())["served"]


async def test_a_resident_cannot_probe_a_stranger_s_card_and_nothing_of_it_is_sent_out(client, world, partner):
    # the partner would answer differently for a matching and a wrong name (linked elsewhere, card_mismatch, lost):
    # a resident's ID number that is not their own is refused first, one answer whatever the rest says
    me = await token_for(client, CQ.id_number)
    other, unknown_person = RESIDENTS[1], "110101199003074573"
    await sandbox_event(partner, type="lost", card_number=RESIDENTS[3].ss_card)
    probes = [
        {"card_number": other.ss_card, "name": other.name, "id_number": other.id_number},
        {"card_number": other.ss_card, "name": "某某", "id_number": other.id_number},
        {"card_number": "ZZ0000000", "name": other.name, "id_number": other.id_number},
        {"card_number": RESIDENTS[3].ss_card, "name": RESIDENTS[3].name, "id_number": RESIDENTS[3].id_number},
        {"card_number": other.ss_card, "name": other.name, "id_number": unknown_person},
    ]
    before = await served(partner)
    answers = []
    for body in probes:
        resp = await client.post("/api/v1/social-security/card-verifications", json=body, headers=me)
        problem = await resp.json()
        answers.append((resp.status, problem["code"], problem.get("detail")))
        assert other.id_number not in str(problem) and other.name not in str(problem)
    assert set(answers) == {(403, "social_security.not_yours", "this ID number is not yours")}
    assert await served(partner) == before  # the stranger's name and ID number never left
    async with world.db.reader() as s:
        q = select(AuditEntry).where(AuditEntry.action == "social_security.card_verified")
        entries = list((await s.execute(q)).scalars())
    assert [(e.outcome, e.details["result"], e.subject_person_id) for e in entries] == [
        ("refused", "not_yours", None)
    ] * len(probes)
    assert all(other.id_number not in str(e.details) and other.ss_card not in str(e.details) for e in entries)


async def test_a_librarian_links_a_reissued_card_and_a_lost_one_is_refused(client, world, partner):
    await sandbox_event(partner, type="lost", card_number=RESIDENTS[3].ss_card)
    desk = await token_for(client, "librarian@CQL")
    r = RESIDENTS[3]
    body = {"card_number": r.ss_card, "name": r.name, "id_number": r.id_number}
    resp = await client.post("/api/v1/social-security/card-verifications", json=body, headers=desk)
    assert (resp.status, (await resp.json())["code"]) == (409, "social_security.card_inactive")


async def test_the_summary_needs_the_consent_and_is_audited(client, world):
    me = await token_for(client, ODD.id_number)
    resp = await client.get("/api/v1/me/social-security", headers=me)
    assert (resp.status, (await resp.json())["code"]) == (403, "social_security.consent_required")

    grant = {"purpose": "social_security_summary", "members": ["CQSI"]}
    assert (await client.post("/api/v1/me/consents", json=grant, headers=me)).status == 201
    resp = await client.get("/api/v1/me/social-security", headers=me)
    assert resp.status == 200, await resp.text()
    (system,) = (await resp.json())["systems"]
    assert system["status"] == "ok" and system["member_code"] == "CQSI"
    assert {e["city"] for e in system["enrolments"]} == {"重庆"}
    assert system["pension_transfer"]["status"] == "in_progress"
    assert system["pension_transfer"]["to_city"] == "成都"

    async with world.db.reader() as s:
        q = select(AuditEntry).where(AuditEntry.action == "social_security.summary_read")
        (entry,) = list((await s.execute(q)).scalars())
    assert entry.purpose == "social_security_summary" and ODD.id_number not in str(entry.details)


async def test_a_broken_partner_shows_in_the_summary_not_as_a_crash(client, world, partner):
    me = await token_for(client, CQ.id_number)
    grant = {"purpose": "social_security_summary"}
    assert (await client.post("/api/v1/me/consents", json=grant, headers=me)).status == 201
    async with ClientSession() as s:
        await s.post(f"{partner}/_sandbox/faults", json={"malformed": "html"})
    resp = await client.get("/api/v1/me/social-security", headers=me)
    assert resp.status == 200
    (system,) = (await resp.json())["systems"]
    assert (system["status"], system["error_code"]) == ("unavailable", "connectors.bad_response")


async def test_a_partner_failure_on_verification_is_a_problem_not_a_500(client, world, partner):
    async with ClientSession() as s:
        await s.post(f"{partner}/_sandbox/faults", json={"malformed": "truncated"})
    me = await token_for(client, CQ.id_number)
    body = {"card_number": CQ.ss_card, "name": CQ.name, "id_number": CQ.id_number}
    resp = await client.post("/api/v1/social-security/card-verifications", json=body, headers=me)
    assert resp.status == 502
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["code"] == "connectors.bad_response"
