"""Who may read a patient's prior results, and the trail every attempt leaves.

Acceptance: a doctor without consent gets 403 and an audit entry; with consent 200; after revocation 403; an
emergency override gives 200 with the reason recorded and flagged; the resident reads their own access log.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from federation.audit.models import AuditEntry
from federation.consent import service as consent
from federation.demo import RESIDENTS
from federation.identity import service as identity
from federation.identity.models import IdentifierType
from federation.members.models import Institution
from health.models import StoredResource
from tests.conftest import token_for

WITH_CONSENT = RESIDENTS[0]  # 张伟: the demo world gives odd sequence numbers a result-sharing consent
WITHOUT_CONSENT = RESIDENTS[2]  # 李娜


async def person_of(svc, resident) -> str:
    async with svc.db.reader() as s:
        p = await identity.resolve_credential(
            s, svc.cipher, identity.IdentifierInput(IdentifierType.ID_NUMBER, resident.id_number)
        )
        return p.id


async def add_result(svc, person_id: str, hospital: str, loinc: str, days_ago: int, status: str = "final") -> str:
    """A laboratory Observation as the ingest stores it."""
    issued = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)
    async with svc.db.uow() as uow:
        inst = (await uow.session.execute(select(Institution).where(Institution.code == hospital))).scalar_one()
        row = StoredResource(
            resource_type="Observation",
            institution_id=inst.id,
            source_id=f"obs-{loinc}-{days_ago}-{person_id[:6]}",
            status=status,
            person_id=person_id,
            category="laboratory",
            code_system="http://loinc.org",
            code=loinc,
            effective_at=issued,
            issued_at=issued,
            body={
                "resourceType": "Observation",
                "status": status,
                "code": {"coding": [{"system": "http://loinc.org", "code": loinc, "display": f"LOINC {loinc}"}]},
                "subject": {"reference": f"Patient/{person_id}"},
                "valueQuantity": {"value": 5.6, "unit": "mmol/L"},
            },
        )
        uow.session.add(row)
        await uow.session.flush()
        row.body["id"] = row.id
        await uow.commit()
        return row.id


async def audit_count(svc, person_id: str, action: str, outcome: str | None = None) -> int:
    q = select(func.count()).where(AuditEntry.subject_person_id == person_id, AuditEntry.action == action)
    if outcome:
        q = q.where(AuditEntry.outcome == outcome)
    async with svc.db.reader() as s:
        return (await s.execute(q)).scalar_one()


@pytest.fixture
async def doctor(client, demo):
    return await token_for(client, "doctor@SCH1")


async def test_lookup_by_credential_in_the_body(client, demo, doctor):
    resp = await client.post(
        "/api/v1/health/patient-lookups",
        json={"credential": {"type": "social_security_card", "value": WITH_CONSENT.ss_card}},
        headers=doctor,
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["patient"]["name"] == WITH_CONSENT.name
    assert body["consent"] is True
    assert WITH_CONSENT.id_number not in await resp.text()  # masked, never in clear

    resp = await client.post(
        "/api/v1/health/patient-lookups",
        json={"credential": {"type": "id_number", "value": "11010519491231002X"}},
        headers=doctor,
    )
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"


async def test_consent_revocation_and_override(client, demo, doctor):
    svc = demo
    person = await person_of(svc, WITHOUT_CONSENT)
    await add_result(svc, person, "CQH1", "2345-7", days_ago=3)
    url = f"/api/v1/health/patients/{person}/prior-results"

    # no consent: refused, and the refusal is in the trail
    resp = await client.get(url, headers=doctor)
    assert resp.status == 403
    assert (await resp.json())["code"] == "health.no_consent"
    assert await audit_count(svc, person, "health.prior_results", "refused") == 1

    # the resident consents (to every member): allowed
    async with svc.db.uow() as uow:
        granted = await consent.grant(
            uow, svc, person, consent.Purpose.RESULT_SHARING, members=["SCH1"], expires_at=None, actor="test"
        )
        await uow.commit()
    resp = await client.get(url, headers=doctor)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["basis"] == "consent" and body["flagged"] is False
    assert body["count"] == 1
    assert await audit_count(svc, person, "health.prior_results", "ok") == 1

    # a consent naming SCH1 does not open the patient to another hospital's doctor
    other = await token_for(client, "doctor@CQH1")
    assert (await client.get(url, headers=other)).status == 403

    # revoked: refused again
    async with svc.db.uow() as uow:
        await consent.revoke(uow, svc, person, granted.id, actor="test")
        await uow.commit()
    assert (await client.get(url, headers=doctor)).status == 403
    assert await audit_count(svc, person, "health.prior_results", "refused") == 3

    # an emergency override: allowed, flagged, with its reason on record
    resp = await client.post(
        f"/api/v1/health/patients/{person}/overrides", json={"reason": "too short"}, headers=doctor
    )
    assert resp.status == 422
    resp = await client.post(
        f"/api/v1/health/patients/{person}/overrides",
        json={"reason": "unconscious on arrival, no relative reachable"},
        headers=doctor,
    )
    assert resp.status == 201, await resp.text()
    override = await resp.json()
    resp = await client.get(url, headers=doctor)
    assert resp.status == 200
    body = await resp.json()
    assert body["basis"] == "override" and body["flagged"] is True
    async with svc.db.reader() as s:
        entry = (
            await s.execute(
                select(AuditEntry)
                .where(AuditEntry.subject_person_id == person, AuditEntry.action == "health.prior_results")
                .order_by(AuditEntry.seq.desc())
                .limit(1)
            )
        ).scalar_one()
    assert entry.details["override"] == override["id"] and entry.details["flagged"] is True

    # the override waits for review; an unjustified one ends at once
    admin = await token_for(client, "admin@federation")
    pending = await (await client.get("/api/v1/health/overrides", headers=admin)).json()
    assert [o["id"] for o in pending["items"]] == [override["id"]]
    assert pending["items"][0]["reason"] == "unconscious on arrival, no relative reachable"
    resp = await client.post(
        f"/api/v1/health/overrides/{override['id']}/review",
        json={"outcome": "unjustified", "note": "patient was conscious"},
        headers=admin,
    )
    assert resp.status == 200
    again = await client.post(
        f"/api/v1/health/overrides/{override['id']}/review", json={"outcome": "justified"}, headers=admin
    )
    assert again.status == 409
    assert (await client.get(url, headers=doctor)).status == 403

    # the resident sees every attempt, allowed and refused, in their access log and as FHIR AuditEvents
    resident = await token_for(client, WITHOUT_CONSENT.id_number)
    log = await (await client.get("/api/v1/me/access-log?limit=100", headers=resident)).json()
    reads = [e for e in log["items"] if e["action"] == "health.prior_results"]
    assert {e["outcome"] for e in reads} == {"ok", "refused"}
    assert any(e["details"].get("flagged") for e in reads)
    resp = await client.get("/api/v1/health/audit-events", headers=resident)
    assert resp.status == 200 and resp.content_type == "application/fhir+json"
    events = [e["resource"] for e in (await resp.json())["entry"]]
    assert {e["resourceType"] for e in events} == {"AuditEvent"}
    assert {e["outcome"] for e in events} >= {"0", "4"}
    assert any(e["purposeOfEvent"][0]["coding"][0]["code"] == "ETREAT" for e in events)
    assert all(e["entity"][0]["what"]["reference"].endswith(f"Patient/{person}") for e in events)


async def test_resident_reads_own_results(client, demo):
    person = await person_of(demo, WITH_CONSENT)
    await add_result(demo, person, "SCH1", "718-7", days_ago=1)
    resident = await token_for(client, WITH_CONSENT.id_number)
    resp = await client.get("/api/v1/me/results", headers=resident)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["patient"] == person and body["basis"] == "self" and body["count"] >= 1


async def test_lookup_without_consent_shows_only_what_the_card_shows(client, demo, doctor):
    resp = await client.post(
        "/api/v1/health/patient-lookups",
        json={"credential": {"type": "social_security_card", "value": WITHOUT_CONSENT.ss_card}},
        headers=doctor,
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["consent"] is False and body["override_active"] is False
    patient = body["patient"]
    assert patient["name"] == WITHOUT_CONSENT.name[0] + "*" * (len(WITHOUT_CONSENT.name) - 1)
    assert (patient["sex"], patient["birth_date"], patient["identifiers"]) == (None, None, [])
    assert await audit_count(demo, patient["id"], "health.lookup", "ok") == 1


async def test_a_lost_card_lookup_is_refused_and_recorded(client, demo, doctor):
    from federation.identity.models import CredentialStatus

    async with demo.db.uow() as uow:
        await identity.set_credential_status(
            uow,
            demo,
            identity.IdentifierInput(IdentifierType.SOCIAL_SECURITY_CARD, WITH_CONSENT.ss_card),
            CredentialStatus.LOST,
            actor="test",
        )
        await uow.commit()
    resp = await client.post(
        "/api/v1/health/patient-lookups",
        json={"credential": {"type": "social_security_card", "value": WITH_CONSENT.ss_card}},
        headers=doctor,
    )
    assert resp.status == 403 and (await resp.json())["code"] == "identity.credential_inactive"
    async with demo.db.reader() as s:
        outcomes = list(
            (await s.execute(select(AuditEntry.outcome).where(AuditEntry.action == "health.lookup"))).scalars()
        )
    assert outcomes == ["inactive"]


async def test_free_text_never_keeps_an_id_number(client, demo, doctor):
    person = await person_of(demo, WITHOUT_CONSENT)
    reason = f"unconscious, wallet card says {WITH_CONSENT.id_number}"
    resp = await client.post(f"/api/v1/health/patients/{person}/overrides", json={"reason": reason}, headers=doctor)
    assert resp.status == 201
    assert WITH_CONSENT.id_number not in await resp.text()
    admin = await token_for(client, "admin@federation")
    listed = await client.get("/api/v1/health/overrides", headers=admin)
    assert WITH_CONSENT.id_number not in await listed.text()


async def test_figures_refuse_dates_outside_the_programme(client, demo):
    admin = await token_for(client, "admin@federation")
    for query in ("until=0001-01-01", "since=0001-01-01&until=9999-12-31", "since=2099-01-01&until=2100-12-31"):
        resp = await client.get(f"/api/v1/health/figures?{query}", headers=admin)
        assert resp.status in (200, 422), (query, resp.status)
        assert resp.status != 500
    assert (await client.get("/api/v1/health/figures?until=0001-01-01", headers=admin)).status == 422


async def test_no_result_leaves_unless_its_read_is_on_record(client, demo, doctor, monkeypatch):
    """The audit entry commits while the page is read; a commit that fails fails the request, on both APIs."""
    person = await person_of(demo, WITH_CONSENT)
    result = await add_result(demo, person, "CQH1", "2345-7", days_ago=3)

    async def broken(uow, record) -> None:
        raise RuntimeError("the audit trail is unavailable")

    monkeypatch.setattr(demo, "audit", broken)
    before = await audit_count(demo, person, "health.prior_results")
    for url in (f"/api/v1/health/patients/{person}/prior-results", f"/fhir/Observation?patient={person}"):
        resp = await client.get(url, headers=doctor)
        assert resp.status == 500, url
        assert result not in await resp.text()
    monkeypatch.undo()
    assert await audit_count(demo, person, "health.prior_results") == before


async def test_a_read_that_fails_after_the_check_is_still_on_record(client, demo, doctor, monkeypatch):
    from health import results

    person = await person_of(demo, WITH_CONSENT)

    async def failing(*args, **kwargs):
        raise RuntimeError("the result store is unavailable")

    monkeypatch.setattr(results, "prior_results", failing)
    before = await audit_count(demo, person, "health.prior_results", "ok")
    resp = await client.get(f"/api/v1/health/patients/{person}/prior-results", headers=doctor)
    assert resp.status == 500
    assert await audit_count(demo, person, "health.prior_results", "ok") == before + 1
