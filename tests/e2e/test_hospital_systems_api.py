"""An administrator starts a hospital pull over HTTP; the results are stored and the connector's health shows its
watermark per resource type."""

from __future__ import annotations

import json

from connectors.framework import service as connectors
from connectors.hospital_systems import sandbox as his
from tests.conftest import token_for
from tests.e2e.test_library_systems_api import wait_for


async def test_an_admin_pulls_a_hospital_as_a_job(client, demo):
    async with his.started_app(observations=40, studies=2) as url:
        async with demo.db.uow() as uow:
            await connectors.configure(
                uow,
                demo,
                "his-e2e",
                kind="hospital_systems",
                member_code="SCH2",
                config={"base_url": url + "/fhir"},
                secrets={"token": his.TOKEN},
                actor="test",
            )
            await uow.commit()
        admin = await token_for(client, "admin@federation")
        resp = await client.post("/api/v1/connectors/his-e2e/syncs", headers=admin)
        assert resp.status == 202, await resp.text()
        job = await wait_for(client, (await resp.json())["job_id"], admin)
    assert job["state"] == "succeeded", job
    assert job["result"]["Patient.created"] == 6 and job["result"]["Observation.created"] == 40
    health = await (await client.get("/api/v1/connectors", headers=admin)).json()
    mine = next(c for c in health["items"] if c["name"] == "his-e2e")
    assert mine["circuit_state"] == "closed" and set(json.loads(mine["watermark"])) == {
        "Patient",
        "Observation",
        "ImagingStudy",
        "DiagnosticReport",
    }
    assert his.TOKEN not in json.dumps(mine)
