"""A doctor accepts or declines prior results; the figures count them."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from health import catalogue_seed, recognition
from health.models import Decision
from tests.conftest import token_for
from tests.e2e.test_health_access import WITH_CONSENT, WITHOUT_CONSENT, add_result, person_of


@pytest.fixture
async def doctor(client, demo):
    await catalogue_seed.load_demo(demo)  # the default recognition catalogue and the demo hospitals' QC
    return await token_for(client, "doctor@SCH1")


async def decisions_count(svc) -> int:
    async with svc.db.reader() as s:
        return (await s.execute(select(func.count()).select_from(Decision))).scalar_one()


async def test_accept_decline_and_figures(client, demo, doctor):
    svc = demo
    person = await person_of(svc, WITH_CONSENT)
    recent = await add_result(svc, person, "CQH1", "2345-7", days_ago=2)  # glucose from Chongqing, fresh
    second = await add_result(svc, person, "CQH1", "718-7", days_ago=1)  # haemoglobin
    withdrawn_elsewhere = await add_result(svc, person, "SCH2", "2345-7", days_ago=1)  # SCH2's QC has expired

    results = await (await client.get(f"/api/v1/health/patients/{person}/prior-results", headers=doctor)).json()
    verdicts = {r["id"]: r["verdict"] for g in results["groups"] for r in g["results"]}
    assert verdicts[recent]["recognised"] is True and verdicts[recent]["mark"] == "HR", verdicts[recent]
    assert "qc_missing" in verdicts[withdrawn_elsewhere]["reasons"]
    assert results["groups"][0]["results"][0]["value"] == "5.6 mmol/L"

    bad = [
        {"result": recent, "decision": "declined"},  # no reason
        {"result": recent, "decision": "declined", "reason_code": "08"},  # "other" without text
        {"result": recent, "decision": "accepted", "reason_code": "01"},  # accepting takes no reason
        {"result": recent, "decision": "maybe"},
        {"result": recent, "decision": "declined", "reason_code": "09"},
    ]
    for body in bad:
        resp = await client.post("/api/v1/health/decisions", json=body, headers=doctor)
        assert resp.status == 422, (body, await resp.text())
    resp = await client.post(
        "/api/v1/health/decisions", json={"result": "0" * 32, "decision": "accepted"}, headers=doctor
    )
    assert resp.status == 404
    assert await decisions_count(svc) == 0

    resp = await client.post(
        "/api/v1/health/decisions", json={"result": recent, "decision": "accepted"}, headers=doctor
    )
    assert resp.status == 201, await resp.text()
    accepted = await resp.json()
    assert accepted["recognised"] is True and accepted["issuing_institution"] == "CQH1"
    assert accepted["deciding_institution"] == "SCH1"
    resp = await client.post(
        "/api/v1/health/decisions",
        json={"result": second, "decision": "declined", "reason_code": "03", "note": "before surgery"},
        headers=doctor,
    )
    assert resp.status == 201
    resp = await client.post(
        "/api/v1/health/decisions",
        json={"result": withdrawn_elsewhere, "decision": "declined", "reason_code": "08", "reason_text": "QC lapsed"},
        headers=doctor,
    )
    assert resp.status == 201

    # a result of a patient who has not consented: refused before anything is stored
    other = await person_of(svc, WITHOUT_CONSENT)
    theirs = await add_result(svc, other, "CQH1", "2345-7", days_ago=1)
    resp = await client.post(
        "/api/v1/health/decisions", json={"result": theirs, "decision": "accepted"}, headers=doctor
    )
    assert resp.status == 403
    assert await decisions_count(svc) == 3

    admin = await token_for(client, "admin@federation")
    today = recognition.today_in_china()  # figures count days as China counts them
    resp = await client.get(
        f"/api/v1/health/figures?since={today - dt.timedelta(days=30)}&until={today}", headers=admin
    )
    assert resp.status == 200, await resp.text()
    fig = await resp.json()
    assert fig["total"]["decided"] == 3 and fig["total"]["accepted"] == 1 and fig["total"]["declined"] == 2
    cqh1 = next(h for h in fig["by_hospital"] if h["hospital"] == "CQH1")
    assert cqh1["decided"] == 2 and cqh1["accepted_recognised"] == 1
    assert {(p["issuing_city"], p["deciding_city"]) for p in fig["by_city_pair"]} == {
        ("重庆", "成都"),
        ("绵阳", "成都"),
    }
    assert {r["code"]: r["count"] for r in fig["declined_reasons"]} == {"03": 1, "08": 1}
    assert sum(m["count"] for m in fig["repeat_tests_avoided"]) == 1
    resp = await client.get(f"/api/v1/health/figures?since={today}&until={today - dt.timedelta(days=1)}", headers=admin)
    assert resp.status == 422
