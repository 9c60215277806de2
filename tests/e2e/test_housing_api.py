"""Housing through the whole application: the resident's summary and certificates with consent, the public check
by id and the published keys; a certificate verified offline with the key set alone, tampered, expired."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import select

from connectors.housing import sandbox as housing_sandbox
from connectors.housing import service as housing
from connectors.housing import signing
from connectors.housing.models import DepositCertificate
from federation.audit.models import AuditEntry
from federation.consent.service import Purpose
from federation.demo import RESIDENTS
from tests.conftest import token_for
from tests.housing_support import configure_centres, grant, person_of

MOVER = housing_sandbox.MOVER  # 陈静: Chongqing fund account, a Chengdu rental application


@pytest.fixture
async def partner():
    from connectors.framework.sandbox import started

    async with started(housing_sandbox.create_app()) as url:
        yield url


@pytest.fixture
async def world(demo, partner):
    await configure_centres(demo, partner)
    return demo


async def test_without_consent_the_summary_and_certificates_are_refused(client, world):
    me = await token_for(client, MOVER.id_number)
    resp = await client.get("/api/v1/me/housing", headers=me)
    assert resp.status == 403 and (await resp.json())["code"] == "housing.consent_required"
    resp = await client.post("/api/v1/me/housing/certificates", json={"fund_centre": "CQHF"}, headers=me)
    assert resp.status == 403 and (await resp.json())["code"] == "housing.consent_required"
    async with world.db.reader() as s:
        assert (await s.execute(select(DepositCertificate))).first() is None


async def test_the_summary_shows_accounts_deposits_rentals_and_credit_and_is_audited(client, world):
    from connectors.framework.sync import run_sync

    await run_sync(world, "housing-cd", actor="test")  # the rental applications' feed
    await grant(world, MOVER.id_number, Purpose.HOUSING_SUMMARY, ["CQHF", "CDHF"])
    me = await token_for(client, MOVER.id_number)
    resp = await client.get("/api/v1/me/housing", headers=me)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    by = {c["member_code"]: c for c in body["centres"]}
    assert by["CQHF"]["status"] == "ok" and len(by["CQHF"]["accounts"]) == 1
    account = by["CQHF"]["accounts"][0]
    assert account["status"] == "active" and account["recent"]["months"] == 12
    assert by["CDHF"]["accounts"] == [] and by["CDHF"]["credit"]["level"] == "good"
    assert [(r["city"], r["status"]) for r in body["rental_applications"]] == [("成都", "under_review")]
    async with world.db.reader() as s:
        entry = (await s.execute(select(AuditEntry).where(AuditEntry.action == "housing.summary_read"))).scalar_one()
    assert entry.subject_person_id == await person_of(world, MOVER.id_number)
    assert MOVER.id_number not in json.dumps(entry.details)


async def test_consent_for_one_centre_shows_only_that_one(client, world):
    await grant(world, MOVER.id_number, Purpose.HOUSING_SUMMARY, ["CDHF"])
    me = await token_for(client, MOVER.id_number)
    body = await (await client.get("/api/v1/me/housing", headers=me)).json()
    by = {c["member_code"]: c for c in body["centres"]}
    assert by["CQHF"]["status"] == "not_consented" and by["CQHF"]["accounts"] == []
    resp = await client.post("/api/v1/me/housing/certificates", json={"fund_centre": "CQHF"}, headers=me)
    assert resp.status == 403


async def test_a_certificate_is_issued_checked_by_id_and_verified_offline(client, world, tmp_path):
    await grant(world, MOVER.id_number, Purpose.HOUSING_SUMMARY, None)
    me = await token_for(client, MOVER.id_number)
    resp = await client.post("/api/v1/me/housing/certificates", json={"fund_centre": "cqhf"}, headers=me)
    assert resp.status == 201, await resp.text()
    raw = await resp.read()
    document = json.loads(raw)
    payload = document["payload"]
    assert payload["holder"] == {"name": MOVER.name, "id_number": MOVER.id_number}
    assert payload["fund_centre"]["name"] == "重庆住房公积金管理中心"
    assert payload["account"]["status"] == "active" and payload["recent_deposits"]["months"] == 12
    assert raw == signing.canonical(document)  # served byte for byte as signed and stored

    keys = await (await client.get("/api/v1/housing/keys")).json()  # anonymous: published
    assert keys["keys"][0]["kid"] == document["kid"] and "d" not in keys["keys"][0]
    verdict = signing.verify(raw, signing.keys_from_jwks(keys))
    assert verdict.valid, verdict.detail

    check = await client.get(resp.headers["Location"])  # anyone holding the id may check it
    assert check.status == 200
    result = await check.json()
    assert (result["status"], result["valid"]) == ("valid", True)
    assert MOVER.name not in await check.text() and MOVER.id_number not in await check.text()

    async with world.db.reader() as s:
        row = await s.get(DepositCertificate, payload["id"])
        q = select(AuditEntry).where(AuditEntry.action.like("housing.certificate%"))
        entries = list((await s.execute(q)).scalars())
    assert MOVER.id_number.encode() not in row.document_enc  # stored encrypted
    assert {e.action for e in entries} == {"housing.certificate_issued", "housing.certificate_checked"}
    assert all(MOVER.id_number not in json.dumps(e.details) for e in entries)


async def test_an_expired_certificate_says_so_by_id_and_offline(client, world):
    await grant(world, MOVER.id_number, Purpose.HOUSING_SUMMARY, None)
    person = await person_of(world, MOVER.id_number)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=200)
    document = await housing.issue_certificate(world, person, fund_centre="CQHF", actor="test", now=long_ago)
    result = await (await client.get(f"/api/v1/housing/certificates/{document['payload']['id']}/verify")).json()
    assert (result["status"], result["valid"]) == ("expired", False)
    assert "expired" in result["detail"]
    key = housing.signing_key(world)
    assert signing.verify(signing.document_bytes(document), {key.kid: key.public}).status == "expired"


async def test_unknown_centre_certificate_and_bad_bodies_are_clear_errors(client, world):
    await grant(world, RESIDENTS[0].id_number, Purpose.HOUSING_SUMMARY, None)
    me = await token_for(client, RESIDENTS[0].id_number)
    resp = await client.post("/api/v1/me/housing/certificates", json={"fund_centre": "NOPE"}, headers=me)
    assert resp.status == 404 and (await resp.json())["code"] == "housing.no_system"
    resp = await client.post("/api/v1/me/housing/certificates", json={"fund_centre": "CDHF"}, headers=me)
    assert resp.status == 404 and (await resp.json())["code"] == "housing.no_fund_account"
    resp = await client.post("/api/v1/me/housing/certificates", json={"fund_centre": "CQHF", "x": 1}, headers=me)
    assert resp.status == 422
    resp = await client.get("/api/v1/housing/certificates/" + "f" * 40 + "/verify")
    assert resp.status == 404 and (await resp.json())["code"] == "housing.certificate_not_found"


async def test_a_partner_failure_is_a_clear_connector_error(client, world, partner):
    from tests.housing_support import sandbox_post

    await grant(world, MOVER.id_number, Purpose.HOUSING_SUMMARY, None)
    me = await token_for(client, MOVER.id_number)
    await sandbox_post(partner, "/_sandbox/faults", {"malformed": "html"})
    resp = await client.post("/api/v1/me/housing/certificates", json={"fund_centre": "CQHF"}, headers=me)
    assert resp.status == 502 and (await resp.json())["code"] == "connectors.bad_response"
    body = await (await client.get("/api/v1/me/housing", headers=me)).json()
    assert {c["status"] for c in body["centres"]} == {"unavailable"}
    async with world.db.reader() as s:
        assert (await s.execute(select(DepositCertificate))).first() is None
