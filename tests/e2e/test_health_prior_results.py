"""Prior results page newest first through the `next` cursor: each result exactly once, nothing withdrawn."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import insert, select

from federation.db import new_id
from federation.members.models import Institution
from health.models import StoredResource
from tests import fhir_support as fx
from tests.conftest import token_for
from tests.e2e.test_health_access import WITH_CONSENT, person_of


async def test_paging_returns_each_result_once(client, demo):
    person = await person_of(demo, WITH_CONSENT)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    async with demo.db.uow() as uow:
        hospital = (await uow.session.execute(select(Institution.id).where(Institution.code == "CQH1"))).scalar_one()
        rows = []
        for i in range(450):
            at = start + dt.timedelta(hours=i // 3)  # three results share each instant: the id breaks ties
            rows.append(
                {
                    "id": new_id(),
                    "resource_type": "Observation",
                    "institution_id": hospital,
                    "source_id": f"p-{i}",
                    "status": "final",
                    "person_id": person,
                    "category": "laboratory",
                    "code_system": "http://loinc.org",
                    "code": "2345-7",
                    "effective_at": at,
                    "issued_at": at,
                    "withdrawn": i % 50 == 0,  # entered-in-error: never listed
                    "body": {"resourceType": "Observation", "status": "final"},
                }
            )
        await uow.session.execute(insert(StoredResource), rows)
        await uow.commit()
    expected = {r["id"] for r in rows if not r["withdrawn"]}

    doctor = await token_for(client, "doctor@SCH1")
    seen: list[str] = []
    url = f"/api/v1/health/patients/{person}/prior-results?limit=200"
    after = None
    for _ in range(10):
        resp = await client.get(url + (f"&after={after}" if after else ""), headers=doctor)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        seen += [r["id"] for g in page["groups"] for r in g["results"]]
        after = page["next"]
        if after is None:
            break
    assert len(seen) == len(set(seen)) == len(expected)
    assert set(seen) == expected
    resp = await client.get(url + "&after=not-a-cursor", headers=doctor)
    assert resp.status == 422


async def test_a_merged_persons_results_are_listed_under_the_survivor(client, demo):
    """The access check reads the person, the consents and whether anyone was merged into them in one statement;
    a merge must still lead both ids to the survivor's page, with the merged person's results on it."""
    from federation.identity import service as identity

    survivor = await person_of(demo, WITH_CONSENT)
    other = await fx.person_by_record(demo, "张伟", "MRN-MERGE-1", "CQH1")
    row = fx.observation(other, await fx.institution(demo, "CQH1"), dt.datetime(2026, 3, 1, tzinfo=dt.UTC))
    await fx.store(demo, [row])
    result_id = row["id"]
    doctor = await token_for(client, "doctor@SCH1")

    def listed(page: dict) -> set[str]:
        return {r["id"] for g in page["groups"] for r in g["results"]}

    # before the merge: the other person gave no consent, the survivor's page does not hold their result
    resp = await client.get(f"/api/v1/health/patients/{other}/prior-results", headers=doctor)
    assert resp.status == 403
    resp = await client.get(f"/api/v1/health/patients/{survivor}/prior-results?limit=500", headers=doctor)
    assert resp.status == 200 and result_id not in listed(await resp.json())

    async with demo.db.uow() as uow:
        await identity.merge(uow, demo, survivor, other, reason="same patient", actor="test")
        await uow.commit()
    for asked in (survivor, other):
        resp = await client.get(f"/api/v1/health/patients/{asked}/prior-results?limit=500", headers=doctor)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        assert page["patient"] == survivor and page["basis"] == "consent"
        assert result_id in listed(page)


async def test_the_page_is_byte_for_byte_what_its_schema_writes(client, demo):
    """The page is written by orjson from plain values, not through PriorResultsOut: it must be exactly what the
    model itself writes (keys, order, nulls, dates and instants), so the documented schema and the answer cannot
    drift apart."""
    from health import catalogue_seed
    from health import demo as health_demo
    from health.api import PriorResultsOut

    await catalogue_seed.load_demo(demo)
    await health_demo.load(demo)  # the demo hospitals' results: recognised, expired, ineligible, outside the catalogue
    person = await person_of(demo, WITH_CONSENT)
    doctor = await token_for(client, "doctor@SCH1")
    resp = await client.get(f"/api/v1/health/patients/{person}/prior-results?limit=500", headers=doctor)
    assert resp.status == 200, await resp.text()
    assert (resp.content_type, resp.charset) == ("application/json", "utf-8")
    body = await resp.read()
    page = PriorResultsOut.model_validate_json(body)
    results = [r for g in page.groups for r in g.results]
    # the comparison covers both marks, a result outside the catalogue (nulls) and several groups
    assert {r.verdict.recognised for r in results} == {True, False}
    assert any(r.verdict.item is None for r in results)
    assert len(page.groups) > 1
    assert body == page.model_dump_json(by_alias=True).encode()
