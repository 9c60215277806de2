"""Jobs over HTTP: an administrator starts a maintenance job and watches it finish; others see only their own."""

from __future__ import annotations

import asyncio
import time

from federation.app import SERVICES
from federation.jobs import service
from tests.conftest import token_for

DEADLINE_S = 5.0


async def _job_of(svc, kind: str, created_by: str, **params) -> str:
    async with svc.db.uow() as uow:
        job = await service.enqueue(uow, kind, params, created_by=created_by)
        await uow.commit()
    return job.id


async def _poll(client, job_id: str, headers: dict[str, str]) -> dict:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        resp = await client.get(f"/api/v1/jobs/{job_id}", headers=headers)
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        if body["state"] in ("succeeded", "failed"):
            return body
        assert time.monotonic() < deadline, f"job still {body['state']} after {DEADLINE_S}s"
        await asyncio.sleep(0.05)


async def test_admin_starts_audit_verify_and_watches_it_succeed(client, demo):
    admin = await token_for(client, "admin@federation")
    resp = await client.post("/api/v1/jobs", json={"kind": "audit.verify"}, headers=admin)
    assert resp.status == 202, await resp.text()
    started = await resp.json()
    assert started["kind"] == "audit.verify"
    assert started["state"] in ("queued", "running", "succeeded")
    assert len(started["id"]) == 32

    body = await _poll(client, started["id"], admin)
    assert body["state"] == "succeeded", body["error"]
    assert body["result"]["ok"] is True
    checked = body["result"]["checked"]
    assert checked > 0, "the demo load writes audit entries"
    assert (body["progress"], body["total"]) == (checked, checked)
    assert body["error"] is None and body["attempts"] == 1
    assert body["started_at"] is not None and body["finished_at"] is not None


async def test_get_job_shows_progress_while_it_runs(client, demo):
    svc = client.app[SERVICES]
    reached = asyncio.Event()
    release = asyncio.Event()

    async def halfway(svc, ctx):
        await ctx.progress(5, 10, matched=4, skipped=1)
        reached.set()
        await release.wait()
        await ctx.progress(10, 10, matched=8, skipped=2)
        return {"matched": 8}

    svc.job_handler("test.halfway", halfway)
    job_id = await _job_of(svc, "test.halfway", "staff:admin@federation")
    await svc.db.doorbell.ring_job(job_id)
    admin = await token_for(client, "admin@federation")
    try:
        await asyncio.wait_for(reached.wait(), DEADLINE_S)
        resp = await client.get(f"/api/v1/jobs/{job_id}", headers=admin)
        assert resp.status == 200
        body = await resp.json()
        assert (body["state"], body["progress"], body["total"]) == ("running", 5, 10)
        assert body["counts"] == {"matched": 4, "skipped": 1}
        assert body["result"] is None and body["finished_at"] is None
    finally:
        release.set()
    done = await _poll(client, job_id, admin)
    assert (done["state"], done["progress"], done["counts"], done["result"]) == (
        "succeeded",
        10,
        {"matched": 8, "skipped": 2},
        {"matched": 8},
    )


async def test_staff_see_their_own_jobs_only_admin_sees_all(client, demo):
    svc = client.app[SERVICES]
    admins = await _job_of(svc, "test.never_registered", "staff:admin@federation")
    mine = await _job_of(svc, "test.never_registered", "staff:librarian@CQL")
    librarian = await token_for(client, "librarian@CQL")
    other_librarian = await token_for(client, "librarian@SCL")
    admin = await token_for(client, "admin@federation")

    refused = await client.get(f"/api/v1/jobs/{admins}", headers=librarian)
    assert refused.status == 403
    assert refused.content_type == "application/problem+json"
    assert (await refused.json())["code"] == "forbidden"
    assert (await client.get(f"/api/v1/jobs/{mine}", headers=other_librarian)).status == 403

    own = await client.get(f"/api/v1/jobs/{mine}", headers=librarian)
    assert own.status == 200
    assert (await own.json())["id"] == mine
    assert (await client.get(f"/api/v1/jobs/{mine}", headers=admin)).status == 200


async def test_unknown_job_is_404_problem_json(client, demo):
    admin = await token_for(client, "admin@federation")
    resp = await client.get(f"/api/v1/jobs/{'f' * 32}", headers=admin)
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert body["code"] == "jobs.not_found"
    assert body["status"] == 404


async def test_only_admin_may_start_a_job_and_only_a_known_kind(client, demo):
    librarian = await token_for(client, "librarian@CQL")
    resp = await client.post("/api/v1/jobs", json={"kind": "audit.verify"}, headers=librarian)
    assert resp.status == 403
    assert (await client.post("/api/v1/jobs", json={"kind": "audit.verify"})).status == 401

    admin = await token_for(client, "admin@federation")
    bad = await client.post("/api/v1/jobs", json={"kind": "rm.everything"}, headers=admin)
    assert bad.status in (400, 422)
    assert bad.content_type == "application/problem+json"
    assert (await client.get(f"/api/v1/jobs/{'a' * 32}")).status == 401
