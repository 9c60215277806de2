"""Consent over HTTP: a resident grants and revokes; members ask whether a consent is in force for them, now."""

from __future__ import annotations

import datetime as dt

from aiohttp.test_utils import TestClient
from sqlalchemy import select, update

from federation import demo as demo_world
from federation.accounts import service as accounts
from federation.audit.models import AuditEntry
from federation.consent.models import Consent
from federation.services import Services
from tests.conftest import token_for

# residents whose sequence digit is even hold no consent in the demo world
WANG = next(r for r in demo_world.RESIDENTS if r.name == "王芳")
LI = next(r for r in demo_world.RESIDENTS if r.name == "李娜")
assert WANG.seq[-1] in "02468" and LI.seq[-1] in "02468"


class Resident:
    def __init__(self, client: TestClient, headers: dict[str, str], person_id: str) -> None:
        self.client, self.headers, self.person_id = client, headers, person_id

    async def grant(self, status: int = 201, **body: object) -> dict:
        resp = await self.client.post("/api/v1/me/consents", json=body, headers=self.headers)
        out = await resp.json(content_type=None)
        assert resp.status == status, out
        return out

    async def revoke(self, consent_id: str, status: int = 200) -> dict:
        resp = await self.client.delete(f"/api/v1/me/consents/{consent_id}", headers=self.headers)
        out = await resp.json(content_type=None)
        assert resp.status == status, out
        return out

    async def consents(self) -> list[dict]:
        resp = await self.client.get("/api/v1/me/consents", headers=self.headers)
        assert resp.status == 200
        return (await resp.json())["items"]


async def resident(client: TestClient, who: demo_world.DemoResident) -> Resident:
    headers = await token_for(client, who.id_number)
    me = await (await client.get("/api/v1/me", headers=headers)).json()
    return Resident(client, headers, me["person_id"])


async def check(
    client: TestClient, headers: dict[str, str], person_id: str, purpose: str = "result_sharing", **extra: str
) -> dict:
    resp = await client.post(
        "/api/v1/consents/checks", json={"person_id": person_id, "purpose": purpose, **extra}, headers=headers
    )
    body = await resp.json()
    assert resp.status == 200, body
    return body


async def trail(svc: Services, action: str) -> list[AuditEntry]:
    async with svc.db.reader() as s:
        q = select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.seq)
        return list((await s.execute(q)).scalars())


def in_days(days: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).isoformat()


async def test_grant_to_all_members(client: TestClient, demo: Services) -> None:
    wang = await resident(client, WANG)
    sch1 = await token_for(client, "doctor@SCH1")
    assert await check(client, sch1, wang.person_id) == {"granted": False, "consent_id": None, "expires_at": None}

    consent = await wang.grant(purpose="result_sharing")
    assert consent["all_members"] is True
    assert consent["members"] == []
    assert consent["expires_at"] is None and consent["revoked_at"] is None

    for doctor in ("doctor@SCH1", "doctor@CQH1", "doctor@SCH2"):
        answer = await check(client, await token_for(client, doctor), wang.person_id)
        assert answer == {"granted": True, "consent_id": consent["id"], "expires_at": None}, doctor
    # another purpose was not granted
    assert (await check(client, sch1, wang.person_id, "library_history"))["granted"] is False


async def test_grant_to_named_members_with_expiry(client: TestClient, demo: Services) -> None:
    wang = await resident(client, WANG)
    expires = in_days(30)
    consent = await wang.grant(purpose="result_sharing", members=["sch1"], expires_at=expires)
    assert consent["all_members"] is False
    assert consent["members"] == ["SCH1"]
    assert dt.datetime.fromisoformat(consent["expires_at"]) == dt.datetime.fromisoformat(expires)

    sch1 = await token_for(client, "doctor@SCH1")
    answer = await check(client, sch1, wang.person_id)
    assert answer["granted"] is True
    assert answer["consent_id"] == consent["id"]
    assert dt.datetime.fromisoformat(answer["expires_at"]) == dt.datetime.fromisoformat(expires)
    for other in ("doctor@CQH1", "doctor@SCH2", "librarian@SCL"):
        assert (await check(client, await token_for(client, other), wang.person_id))["granted"] is False, other


async def test_expired_consent_is_not_in_force(client: TestClient, demo: Services) -> None:
    wang = await resident(client, WANG)
    consent = await wang.grant(purpose="result_sharing", members=["SCH1"], expires_at=in_days(1))
    sch1 = await token_for(client, "doctor@SCH1")
    assert (await check(client, sch1, wang.person_id))["granted"] is True
    # a day later (moved in the database rather than waited for)
    async with demo.db.uow() as uow:
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        await uow.session.execute(update(Consent).where(Consent.id == consent["id"]).values(expires_at=past))
        await uow.commit()
    assert (await check(client, sch1, wang.person_id))["granted"] is False
    # still listed, so the resident sees what they once granted
    assert [c["id"] for c in await wang.consents()] == [consent["id"]]


async def test_revoked_consent_stops_at_once(client: TestClient, demo: Services) -> None:
    wang = await resident(client, WANG)
    consent = await wang.grant(purpose="result_sharing")
    sch1 = await token_for(client, "doctor@SCH1")
    assert (await check(client, sch1, wang.person_id))["granted"] is True

    revoked = await wang.revoke(consent["id"])
    assert revoked["id"] == consent["id"]
    assert revoked["revoked_at"] is not None
    assert (await check(client, sch1, wang.person_id))["granted"] is False
    # revoking again is harmless and keeps the first time
    again = await wang.revoke(consent["id"])
    assert again["revoked_at"] == revoked["revoked_at"]
    assert len(await trail(demo, "consent.revoke")) == 1


async def test_newer_consent_answers_after_an_older_is_revoked(client: TestClient, demo: Services) -> None:
    wang = await resident(client, WANG)
    broad = await wang.grant(purpose="result_sharing")
    narrow = await wang.grant(purpose="result_sharing", members=["SCH1"])
    await wang.revoke(broad["id"])
    sch1 = await token_for(client, "doctor@SCH1")
    assert (await check(client, sch1, wang.person_id))["consent_id"] == narrow["id"]
    assert (await check(client, await token_for(client, "doctor@CQH1"), wang.person_id))["granted"] is False


async def test_my_consents_lists_only_my_own(client: TestClient, demo: Services) -> None:
    wang = await resident(client, WANG)
    li = await resident(client, LI)
    assert await wang.consents() == []
    first = await wang.grant(purpose="result_sharing")
    second = await wang.grant(purpose="library_history", members=["CQL", "SCL"], expires_at=in_days(10))
    await li.grant(purpose="travel_summary")
    items = await wang.consents()
    assert {c["id"] for c in items} == {first["id"], second["id"]}
    assert {c["purpose"] for c in items} == {"result_sharing", "library_history"}
    assert [c["purpose"] for c in await li.consents()] == ["travel_summary"]


async def test_resident_cannot_revoke_another_residents_consent(client: TestClient, demo: Services) -> None:
    wang = await resident(client, WANG)
    li = await resident(client, LI)
    consent = await wang.grant(purpose="result_sharing")
    body = await li.revoke(consent["id"], status=404)
    assert body["code"] == "consent.not_found"
    await li.revoke("0" * 32, status=404)
    # still in force, and nothing was written about it
    assert (await check(client, await token_for(client, "doctor@SCH1"), wang.person_id))["granted"] is True
    assert await trail(demo, "consent.revoke") == []


async def test_grant_revoke_and_check_are_in_the_audit_trail(client: TestClient, demo: Services) -> None:
    wang = await resident(client, WANG)
    expires = in_days(7)
    consent = await wang.grant(purpose="result_sharing", members=["SCH1", "CQH1"], expires_at=expires)
    sch1 = await token_for(client, "doctor@SCH1")
    await check(client, sch1, wang.person_id)
    await wang.revoke(consent["id"])
    await check(client, sch1, wang.person_id)

    demo_grants = len([e for e in await trail(demo, "consent.grant") if e.actor == "system:demo"])
    grants = [e for e in await trail(demo, "consent.grant") if e.actor != "system:demo"]
    assert demo_grants == len([r for r in demo_world.RESIDENTS if r.seq[-1] in "13579"])
    assert len(grants) == 1
    g = grants[0]
    assert (g.actor, g.subject_person_id, g.purpose) == (f"resident:{WANG.name}", wang.person_id, "result_sharing")
    assert g.details["consent"] == consent["id"]
    assert g.details["members"] == ["CQH1", "SCH1"]
    assert dt.datetime.fromisoformat(g.details["expires_at"]) == dt.datetime.fromisoformat(expires)

    [r] = await trail(demo, "consent.revoke")
    assert (r.actor, r.subject_person_id, r.details) == (g.actor, wang.person_id, {"consent": consent["id"]})

    checks = await trail(demo, "consent.check")
    assert [(c.actor, c.actor_institution, c.subject_person_id, c.purpose, c.outcome) for c in checks] == [
        ("staff:doctor@SCH1", "SCH1", wang.person_id, "result_sharing", "granted"),
        ("staff:doctor@SCH1", "SCH1", wang.person_id, "result_sharing", "none"),
    ]
    assert g.seq < checks[0].seq < r.seq < checks[1].seq

    # the resident sees all of it in their access log
    log = await (await client.get("/api/v1/me/access-log", headers=wang.headers)).json()
    actions = [e["action"] for e in log["items"]]
    assert actions[:4] == ["consent.check", "consent.revoke", "consent.check", "consent.grant"]


async def test_invalid_grants_are_refused(client: TestClient, demo: Services) -> None:
    wang = await resident(client, WANG)
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)).isoformat()
    body = await wang.grant(status=422, purpose="result_sharing", expires_at=past)
    assert body["code"] == "consent.invalid"
    assert "future" in body["detail"]

    naive = (dt.datetime.now() + dt.timedelta(days=1)).replace(tzinfo=None).isoformat()  # noqa: DTZ005
    assert (await wang.grant(status=422, purpose="result_sharing", expires_at=naive))["code"] == "validation_failed"
    assert (await wang.grant(status=422, purpose="result_sharing", members=[]))["code"] == "consent.invalid"
    assert (await wang.grant(status=422, purpose="result_sharing", members=[""]))["code"] == "validation_failed"
    assert (await wang.grant(status=422, purpose="everything"))["code"] == "validation_failed"
    unknown = await wang.grant(status=422, purpose="result_sharing", members=["SCH1", "NOPE"])
    assert unknown["code"] == "consent.invalid"
    assert "NOPE" in unknown["detail"]
    # none of them left a consent or an audit entry behind
    assert await wang.consents() == []
    assert [e for e in await trail(demo, "consent.grant") if e.subject_person_id == wang.person_id] == []


async def test_staff_cannot_grant_for_a_resident(client: TestClient, demo: Services) -> None:
    resp = await client.post(
        "/api/v1/me/consents", json={"purpose": "result_sharing"}, headers=await token_for(client, "doctor@SCH1")
    )
    assert resp.status == 403


async def test_only_an_administrator_may_ask_for_another_member(client: TestClient, demo: Services) -> None:
    wang = await resident(client, WANG)
    await wang.grant(purpose="result_sharing", members=["SCH1"])
    admin = await token_for(client, "admin@federation")
    assert (await check(client, admin, wang.person_id))["granted"] is False  # FEDERATION was not named
    assert (await check(client, admin, wang.person_id, institution="SCH1"))["granted"] is True
    # a doctor elsewhere cannot borrow SCH1's consent by naming it
    cqh1 = await token_for(client, "doctor@CQH1")
    assert (await check(client, cqh1, wang.person_id, institution="SCH1"))["granted"] is False


async def test_member_system_checks_with_an_api_key(client: TestClient, demo: Services) -> None:
    wang = await resident(client, WANG)
    await wang.grant(purpose="result_sharing", members=["SCH1"])
    async with demo.db.uow() as uow:
        _, sch1_key = await accounts.create_api_key(uow, demo, "SCH1", ["consent.check"], actor="test")
        _, cqh1_key = await accounts.create_api_key(uow, demo, "CQH1", ["consent.check"], actor="test")
        await uow.commit()
    assert (await check(client, {"Authorization": f"Bearer {sch1_key}"}, wang.person_id))["granted"] is True
    assert (await check(client, {"Authorization": f"Bearer {cqh1_key}"}, wang.person_id))["granted"] is False


async def test_check_for_an_unknown_or_malformed_person(client: TestClient, demo: Services) -> None:
    sch1 = await token_for(client, "doctor@SCH1")
    assert (await check(client, sch1, "f" * 32))["granted"] is False
    resp = await client.post(
        "/api/v1/consents/checks", json={"person_id": "f" * 40, "purpose": "result_sharing"}, headers=sch1
    )
    assert resp.status == 422, await resp.text()
