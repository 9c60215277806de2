"""Prior results page newest first through the `next` cursor: each result exactly once, nothing withdrawn."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import insert, select

from federation.db import new_id
from federation.members.models import Institution
from health.models import StoredResource
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
