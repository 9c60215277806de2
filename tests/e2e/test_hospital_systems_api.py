"""An administrator starts a hospital pull over HTTP; the results are stored and the connector's health shows its
watermark per resource type."""

from __future__ import annotations

import json
import random

from aiohttp import ClientSession

from connectors.framework import service as connectors
from connectors.framework.sync import run_sync
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


async def test_the_connectors_health_shows_refused_results_and_how_long_they_hold_the_watermark(client, demo):
    async with his.started_app(observations=8, studies=1) as url:
        async with demo.db.uow() as uow:
            await connectors.configure(
                uow,
                demo,
                "his-e2e",
                kind="hospital_systems",
                member_code="SCH2",
                config={"base_url": url + "/fhir", "options": {"refusal_retries": 1}},
                secrets={"token": his.TOKEN},
                actor="test",
            )
            await uow.commit()
        await run_sync(demo, "his-e2e", actor="test")
        async with ClientSession() as s:  # a result whose Patient the hospital never sends
            await s.post(url + "/_sandbox/resources", json=his.observation(999, 40, random.Random(1)))
        admin = await token_for(client, "admin@federation")

        async def health() -> dict:
            await run_sync(demo, "his-e2e", actor="test")
            items = (await (await client.get("/api/v1/connectors", headers=admin)).json())["items"]
            return next(c for c in items if c["name"] == "his-e2e")

        held = await health()
        assert (held["last_counts"]["Observation.refused"], held["last_counts"]["Observation.held_runs"]) == (1, 1)
        assert json.loads(held["watermark"])["Observation"][1] == 1
        passed = await health()
        assert (passed["last_counts"]["Observation.given_up"], passed["last_error_code"]) == (
            1,
            "hospital_systems.refusals_given_up",
        )
        assert "Observation/his-o00999" in passed["last_error"]
