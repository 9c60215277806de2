"""An administrator starts a library harvest over HTTP; the records are searchable in the union catalogue and the
connector's health shows how far it got."""

from __future__ import annotations

import asyncio

from connectors.framework import service as connectors
from connectors.library_systems import sandbox as oai_sandbox
from tests.conftest import token_for


async def wait_for(client, job_id: str, headers: dict) -> dict:
    for _ in range(300):
        job = await (await client.get(f"/api/v1/jobs/{job_id}", headers=headers)).json()
        if job["state"] in ("succeeded", "failed"):
            return job
        await asyncio.sleep(0.1)
    raise AssertionError("the job did not finish")


async def test_an_admin_harvests_a_library_and_its_books_are_found(client, demo):
    async with oai_sandbox.started_app(records=60, deleted=0) as url:
        async with demo.db.uow() as uow:
            await connectors.configure(
                uow,
                demo,
                "lib-e2e",
                kind="library_systems",
                member_code="CDL",
                config={"base_url": url + "/oai"},
                actor="test",
            )
            await uow.commit()
        admin = await token_for(client, "admin@federation")
        resp = await client.post("/api/v1/connectors/lib-e2e/syncs", headers=admin)
        assert resp.status == 202, await resp.text()
        job = await wait_for(client, (await resp.json())["job_id"], admin)
    assert job["state"] == "succeeded", job
    assert job["result"]["added"] == 60
    found = None
    for _ in range(50):  # the index follows the committed pages through the outbox
        found = await (await client.get("/api/v1/catalog/search", params={"q": "红楼梦", "library": "CDL"})).json()
        if found["total"]:
            break
        await asyncio.sleep(0.1)
    assert found and found["total"] >= 1
    health = await (await client.get("/api/v1/connectors", headers=admin)).json()
    mine = next(c for c in health["items"] if c["name"] == "lib-e2e")
    assert (mine["circuit_state"], mine["watermark"], mine["last_error"]) == ("closed", "2026-06-01T00:00:19Z", None)
