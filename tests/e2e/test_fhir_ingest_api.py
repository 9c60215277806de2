"""Hospitals pushing results over HTTP: ``POST /fhir`` and ``POST /fhir/$import``, every answer FHIR-shaped."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select, update

from federation.accounts.service import create_api_key
from federation.demo import RESIDENTS
from federation.members.models import Institution
from federation.services import Services
from health.models import StoredResource
from tests.conftest import token_for
from tests.fixtures import fhir as fx

FHIR = "application/fhir+json"
DEADLINE_S = 60


async def key_for(svc: Services, member: str = "CQH1", scopes: tuple[str, ...] = ("health.write",)) -> dict[str, str]:
    async with svc.db.uow() as uow:
        _, secret = await create_api_key(uow, svc, member, list(scopes), actor="test")
        await uow.commit()
    return {"Authorization": f"Bearer {secret}"}


def patient() -> dict[str, Any]:
    r = RESIDENTS[0]
    return fx.patient(number=r.id_number, name=(r.name[0], r.name[1:]))


def basics() -> list[dict[str, Any]]:
    return [patient(), fx.load("organization"), fx.load("practitioner"), fx.load("specimen")]


async def post(client: TestClient, headers: dict[str, str], data: Any, ctype: str = FHIR, **extra: str) -> Any:
    body = data if isinstance(data, bytes) else json.dumps(data, ensure_ascii=False).encode()
    return await client.post("/fhir", data=body, headers={**headers, "Content-Type": ctype, **extra})


async def stored_count(svc: Services) -> int:
    async with svc.db.reader() as s:
        return (await s.execute(select(func.count()).select_from(StoredResource))).scalar_one()


async def finished(client: TestClient, headers: dict[str, str], location: str) -> dict[str, Any]:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        resp = await client.get(location, headers=headers)
        assert resp.status == 200, await resp.text()
        job = await resp.json()
        if job["state"] in ("succeeded", "failed"):
            return job
        assert time.monotonic() < deadline, f"job still {job['state']}"
        await asyncio.sleep(0.05)


def assert_outcome(body: dict[str, Any]) -> None:
    assert body["resourceType"] == "OperationOutcome" and body["issue"], body
    assert all(i["severity"] in ("error", "fatal") for i in body["issue"])


async def test_transaction_then_resend(client: TestClient, demo: Services) -> None:
    headers = await key_for(demo)
    bundle = fx.bundle([*basics(), *fx.lab_set()[3:]])
    resp = await post(client, headers, bundle)
    assert resp.status == 200 and resp.content_type == FHIR, await resp.text()
    body = await resp.json()
    assert body["type"] == "transaction-response"
    assert len(body["entry"]) == len(bundle["entry"])
    for e in body["entry"]:
        assert e["response"]["status"] == "201 Created"
        rtype, rid, history, version = e["response"]["location"].split("/")
        assert (history, version, e["response"]["etag"]) == ("_history", "1", 'W/"1"') and len(rid) == 32
    count = await stored_count(demo)
    resp = await post(client, headers, bundle)
    body = await resp.json()
    assert {e["response"]["status"] for e in body["entry"]} == {"200 OK"}
    assert await stored_count(demo) == count


async def test_batch_answers_each_entry(client: TestClient, demo: Services) -> None:
    headers = await key_for(demo)
    bad = fx.load("observation-integer")
    bad["effectiveDateTime"] = "2024-13-45"
    bundle = fx.bundle([*basics(), fx.load("observation-string"), bad], kind="batch")
    resp = await post(client, headers, bundle)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses == ["201 Created"] * 5 + ["422 Unprocessable Entity"]
    problem = body["entry"][5]["response"]["outcome"]
    assert problem["issue"][0]["expression"] == ["Bundle.entry[5].resource.effectiveDateTime"]


async def test_bad_input_is_an_operation_outcome_and_stores_nothing(client: TestClient, demo: Services) -> None:
    headers = await key_for(demo)
    unknown_field = fx.load("observation-string")
    unknown_field["colour"] = "yellow"
    wrong_type = {"resourceType": "Encounter", "id": "e1", "status": "finished"}
    dangling = fx.load("observation-string")
    dangling["specimen"] = {"reference": "urn:uuid:3f1c0a3e-0000-4000-8000-000000000000"}
    bad_date = fx.load("observation-string")
    bad_date["effectiveDateTime"] = "2024-13-45"
    cases = [
        (b'{"resourceType": "Bundle", "type": "transaction", "entry": [', 400, None),
        (b"[" * 200_000 + b"]" * 200_000, 400, None),
        (b'{"resourceType": "Bundle", "type": "batch", "total": NaN}', 400, None),
        (json.dumps({"resourceType": "Patient", "id": "x"}).encode(), 400, "Bundle.resourceType"),
        (fx.bundle([*basics(), unknown_field]), 400, "Bundle.entry[4].resource.colour"),
        (fx.bundle([*basics(), wrong_type]), 422, "Bundle.entry[4].resource.resourceType"),
        (fx.bundle([*basics(), dangling]), 422, "Bundle.entry[4].resource.specimen.reference"),
        (fx.bundle([*basics(), bad_date]), 422, "Bundle.entry[4].resource.effectiveDateTime"),
    ]
    for data, status, where in cases:
        resp = await post(client, headers, data)
        assert resp.status == status and resp.content_type == FHIR, (where, await resp.text())
        body = await resp.json()
        assert_outcome(body)
        if where:
            assert where in [x for i in body["issue"] for x in i.get("expression", ())], body
    resp = await post(client, headers, b"<Bundle/>", ctype="application/xml")
    assert resp.status == 415 and resp.content_type == FHIR
    assert await stored_count(demo) == 0


@pytest.mark.parametrize("levels", [200, 480, 500, 520, 2_000])
async def test_deep_nesting_is_answered_never_a_500(client: TestClient, demo: Services, levels: int) -> None:
    """Extensions nested ``levels`` deep (two JSON levels each): around the JSON readers' own depth limits (the
    standard library's and orjson's 1,024) and Python's recursion limit, a FHIR answer, and all or nothing."""
    deep = '{"url": "urn:x:node", "extension": [' * levels + '{"url": "urn:x:leaf", "valueString": "x"}'
    deep += "]}" * levels  # written out: Python's own json, copy and repr stop near a depth of 1,000
    observation = fx.load("observation-string")
    observation["extension"] = ["DEEP"]
    payload = json.dumps(fx.bundle([*basics(), observation]), ensure_ascii=False).replace('"DEEP"', deep)
    resp = await post(client, await key_for(demo), payload.encode())
    assert resp.status in (200, 400, 422) and resp.content_type == FHIR, await resp.text()
    body = await resp.json()
    if resp.status == 200:
        assert body["type"] == "transaction-response"
        assert await stored_count(demo) > 0
    else:
        assert_outcome(body)
        assert await stored_count(demo) == 0


async def test_a_50_mb_bundle_is_refused(client: TestClient, demo: Services) -> None:
    headers = await key_for(demo)
    filler = fx.bundle([patient()])
    filler["entry"][0]["resource"]["text"] = {"status": "generated", "div": "<div>" + "x" * (50 * 2**20) + "</div>"}
    resp = await post(client, headers, filler)
    assert resp.status == 413 and resp.content_type == FHIR
    body = await resp.json()
    assert_outcome(body)
    assert "$import" in body["issue"][0]["diagnostics"]
    assert await stored_count(demo) == 0


async def test_only_a_hospital_key_with_the_scope_pushes(client: TestClient, demo: Services) -> None:
    bundle = fx.bundle([patient()])
    for headers, status in (
        ({}, 401),
        (await token_for(client, "doctor@SCH1"), 403),
        (await key_for(demo, scopes=("health.read",)), 403),
        (await key_for(demo, member="CQL"), 403),
    ):
        resp = await post(client, headers, bundle)
        assert resp.status == status and resp.content_type == FHIR, await resp.text()
        assert_outcome(await resp.json())
    assert await stored_count(demo) == 0


async def test_a_hospital_that_left_pushes_nothing_with_its_old_key(client: TestClient, demo: Services) -> None:
    """The member's kind and standing are read with the key on each request: a hospital made inactive is refused
    at its next push, and taken back at the one after it is active again."""
    headers = await key_for(demo)
    bundle = fx.bundle([patient()])

    async def set_active(active: bool) -> None:
        async with demo.db.uow() as uow:
            await uow.session.execute(update(Institution).where(Institution.code == "CQH1").values(active=active))
            await uow.commit()

    await set_active(False)
    resp = await post(client, headers, bundle)
    assert resp.status == 403 and resp.content_type == FHIR, await resp.text()
    assert await stored_count(demo) == 0
    await set_active(True)
    resp = await post(client, headers, bundle)
    assert resp.status == 200, await resp.text()
    assert await stored_count(demo) > 0  # the Patient (and its Provenance)


async def test_respond_async_and_large_bundles_run_as_jobs(client: TestClient, demo: Services) -> None:
    headers = await key_for(demo)
    resp = await post(client, headers, fx.bundle(basics()), Prefer="respond-async")
    assert resp.status == 202, await resp.text()
    job = await finished(client, headers, resp.headers["Content-Location"])
    assert job["state"] == "succeeded" and job["result"]["counts"]["Patient"] == {"created": 1}
    demo.settings.fhir_sync_max_entries = 10
    resp = await post(client, headers, fx.generated_transaction(patients=3, per_patient=3))
    assert resp.status == 202
    job = await finished(client, headers, resp.headers["Content-Location"])
    assert job["result"]["counts"]["Observation"] == {"created": 9}, job
    assert list((demo.settings.data_dir / "uploads").iterdir()) == []


async def test_ndjson_import_reports_each_bad_line(client: TestClient, demo: Services) -> None:
    headers = await key_for(demo)
    bad = fx.load("observation-boolean")
    bad["effectiveDateTime"] = "2024-13-45"
    lines = [json.dumps(r, ensure_ascii=False) for r in basics()]
    lines += [json.dumps(fx.load("observation-string"), ensure_ascii=False), "", "{not json", json.dumps(bad)]
    ndjson = ("\n".join(lines) + "\n").encode()
    resp = await client.post(
        "/fhir/$import", data=ndjson, headers={**headers, "Content-Type": "application/fhir+ndjson"}
    )
    assert resp.status == 202, await resp.text()
    job = await finished(client, headers, resp.headers["Content-Location"])
    result = job["result"]
    assert result["lines"] == 7 and result["refused"] == 2
    assert {e["line"] for e in result["errors"]} == {7, 8}
    assert {"line": 8, "expression": "Observation.effectiveDateTime"}.items() <= next(
        e for e in result["errors"] if e["line"] == 8
    ).items()
    assert result["counts"]["Observation"] == {"created": 1, "error": 1}
    assert list((demo.settings.data_dir / "uploads").iterdir()) == []
    resp = await client.post("/fhir/$import", data=ndjson, headers={**headers, "Content-Type": "text/csv"})
    assert resp.status == 415 and resp.content_type == FHIR


async def test_dates_at_the_ends_of_the_calendar_are_a_422_naming_the_field(client: TestClient, demo: Services) -> None:
    headers = await key_for(demo)
    cases = [
        (4, "effectiveDateTime", "0001-01-01T00:00:00+14:00"),
        (4, "effectiveDateTime", "0001-01-01"),
        (4, "effectiveDateTime", "9999-12-31T23:59:59-12:00"),
        (4, "issued", "0001-01-01T00:00:00+14:00"),
        (4, "issued", "9999-12-31T23:59:59-12:00"),
        (0, "meta.lastUpdated", "0001-01-01T00:00:00+14:00"),
    ]
    for index, field, value in cases:
        resources = [*basics(), fx.load("observation-quantity")]
        if field == "meta.lastUpdated":
            resources[index]["meta"] = {"lastUpdated": value}
        else:
            resources[index][field] = value
        resp = await post(client, headers, fx.bundle(resources))
        assert resp.status == 422 and resp.content_type == FHIR, (field, value, await resp.text())
        body = await resp.json()
        assert_outcome(body)
        expressions = [x for i in body["issue"] for x in i.get("expression", ())]
        assert f"Bundle.entry[{index}].resource.{field}" in expressions, body
    assert await stored_count(demo) == 0
    # the same load with ordinary dates goes in, and in again unchanged
    for status in ("201 Created", "200 OK"):
        resp = await post(client, headers, fx.bundle([*basics(), fx.load("observation-quantity")]))
        assert resp.status == 200, await resp.text()
        assert {e["response"]["status"] for e in (await resp.json())["entry"]} == {status}
