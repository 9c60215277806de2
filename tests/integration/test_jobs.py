"""Background jobs: the row is the truth; claimed once, beaten while running, re-queued when its process died."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import update

from federation.db import utcnow
from federation.jobs import service
from federation.jobs.models import Job, JobState
from federation.jobs.runner import InProcessRunner

DEADLINE_S = 5.0


async def enqueue(svc, kind: str, params: dict[str, Any] | None = None, *, created_by: str = "test") -> str:
    async with svc.db.uow() as uow:
        job = await service.enqueue(uow, kind, params or {}, created_by=created_by)
        await uow.commit()
    return job.id


async def wait_for_state(svc, job_id: str, *states: str, within_s: float = DEADLINE_S) -> Job:
    deadline = time.monotonic() + within_s
    while True:
        job = await service.get(svc, job_id)
        if job.state in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.state} after {within_s}s, wanted {states}")
        await asyncio.sleep(0.02)


async def set_job(svc, job_id: str, **values: Any) -> None:
    async with svc.db.uow() as uow:
        await uow.session.execute(update(Job).where(Job.id == job_id).values(**values))
        await uow.commit()


async def crashed_job(svc, kind: str, *, heartbeat_age: dt.timedelta, attempts: int = 1) -> str:
    """A job as a process that died mid-run leaves it: running, heartbeat of the given age."""
    job_id = await enqueue(svc, kind)
    beat = utcnow() - heartbeat_age
    await set_job(svc, job_id, state=JobState.RUNNING.value, started_at=beat, heartbeat_at=beat, attempts=attempts)
    return job_id


@pytest.fixture
async def runner(svc) -> AsyncIterator[InProcessRunner]:
    r = InProcessRunner(svc, poll_s=0.05)
    svc.db.doorbell = r
    await r.start()
    yield r
    await r.stop(timeout_s=2)


async def test_runner_runs_a_job_and_records_progress_and_result(svc, runner):
    step = asyncio.Event()
    proceed = asyncio.Event()

    async def count(svc, ctx):
        n = ctx.params["n"]
        await ctx.progress(1, n, seen=1, skipped=0)
        step.set()
        await proceed.wait()
        for i in range(2, n + 1):
            await ctx.progress(i, n, seen=i, skipped=i // 2)
        return {"sum": sum(range(1, n + 1))}

    svc.job_handler("test.count", count)
    job_id = await enqueue(svc, "test.count", {"n": 4}, created_by="staff:admin@federation")

    await asyncio.wait_for(step.wait(), DEADLINE_S)
    mid = await service.get(svc, job_id)
    assert (mid.state, mid.progress, mid.total, mid.counts) == ("running", 1, 4, {"seen": 1, "skipped": 0})
    assert mid.started_at is not None and mid.finished_at is None
    proceed.set()

    job = await wait_for_state(svc, job_id, "succeeded", "failed")
    assert job.state == "succeeded", job.error
    assert job.result == {"sum": 10}
    assert (job.progress, job.total, job.counts) == (4, 4, {"seen": 4, "skipped": 2})
    assert job.error is None and job.attempts == 1 and job.created_by == "staff:admin@federation"
    assert job.started_at <= job.finished_at


async def test_a_handler_returning_nothing_succeeds_with_an_empty_result(svc, runner):
    async def quiet(svc, ctx):
        return None

    svc.job_handler("test.quiet", quiet)
    job = await wait_for_state(svc, await enqueue(svc, "test.quiet"), "succeeded", "failed")
    assert (job.state, job.result, job.progress) == ("succeeded", {}, 0)


async def test_a_failing_handler_fails_the_job_with_its_error(svc, runner):
    async def broken(svc, ctx):
        await ctx.progress(3, 10)
        raise ValueError(f"cannot read row {ctx.params['row']}")

    svc.job_handler("test.broken", broken)
    job = await wait_for_state(svc, await enqueue(svc, "test.broken", {"row": 42}), "succeeded", "failed")
    assert job.state == "failed"
    assert job.error == "ValueError: cannot read row 42"
    assert job.result is None and job.finished_at is not None
    assert (job.progress, job.total) == (3, 10)


async def test_an_unknown_kind_fails(svc, runner):
    job = await wait_for_state(svc, await enqueue(svc, "test.nobody_handles_this"), "succeeded", "failed")
    assert job.state == "failed"
    assert "test.nobody_handles_this" in job.error


async def test_the_runner_survives_a_failing_job_and_runs_the_next(svc, runner):
    async def broken(svc, ctx):
        raise RuntimeError("boom")

    async def fine(svc, ctx):
        return {"ok": True}

    svc.job_handler("test.broken", broken)
    svc.job_handler("test.fine", fine)
    first = await enqueue(svc, "test.broken")
    second = await enqueue(svc, "test.fine")
    assert (await wait_for_state(svc, first, "failed", "succeeded")).state == "failed"
    assert (await wait_for_state(svc, second, "failed", "succeeded")).result == {"ok": True}


async def test_two_concurrent_executes_run_a_job_once(svc):
    runs: list[int] = []

    async def slow(svc, ctx):
        runs.append(ctx.attempt)
        await asyncio.sleep(0.05)
        return {"n": len(runs)}

    svc.job_handler("test.slow", slow)
    job_id = await enqueue(svc, "test.slow")
    ran = await asyncio.gather(*(service.execute(svc, job_id) for _ in range(4)))
    assert sorted(ran) == [False, False, False, True]
    assert runs == [1]
    job = await service.get(svc, job_id)
    assert (job.state, job.attempts, job.result) == ("succeeded", 1, {"n": 1})
    # a finished job is never claimed again
    assert await service.execute(svc, job_id) is False
    assert runs == [1]


async def test_a_stale_running_job_is_requeued_and_completes(svc):
    async def work(svc, ctx):
        return {"attempt": ctx.attempt}

    svc.job_handler("test.work", work)
    dead = await crashed_job(svc, "test.work", heartbeat_age=service.LEASE * 2)
    alive = await crashed_job(svc, "test.work", heartbeat_age=dt.timedelta(seconds=1))

    assert await service.requeue_stale(svc) == [dead]
    assert (await service.get(svc, dead)).state == "queued"
    assert (await service.get(svc, alive)).state == "running", "a job with a fresh heartbeat was taken away"
    assert await service.queued_ids(svc) == [dead]

    assert await service.execute(svc, dead) is True
    job = await service.get(svc, dead)
    assert (job.state, job.result, job.attempts) == ("succeeded", {"attempt": 2}, 2)
    assert await service.requeue_stale(svc) == []


async def test_runner_start_requeues_every_running_job_and_runs_it(svc):
    async def work(svc, ctx):
        return {"attempt": ctx.attempt}

    svc.job_handler("test.work", work)
    # the embedded runner is the only worker: whatever is running when it starts was left by its dead process
    left = await crashed_job(svc, "test.work", heartbeat_age=dt.timedelta(seconds=1))
    r = InProcessRunner(svc, poll_s=0.05)
    svc.db.doorbell = r
    await r.start()
    try:
        job = await wait_for_state(svc, left, "succeeded", "failed")
    finally:
        await r.stop(timeout_s=2)
    assert (job.state, job.result, job.attempts) == ("succeeded", {"attempt": 2}, 2)


async def test_a_long_job_beats_its_heartbeat_and_keeps_its_lease(svc, monkeypatch):
    monkeypatch.setattr(service, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(service, "LEASE", dt.timedelta(seconds=0.3))
    release = asyncio.Event()

    async def long(svc, ctx):  # never reports progress: the heartbeat must come from the runner
        await release.wait()
        return {"done": True}

    svc.job_handler("test.long", long)
    job_id = await enqueue(svc, "test.long")
    run = asyncio.create_task(service.execute(svc, job_id))
    try:
        started = await wait_for_state(svc, job_id, "running")
        await asyncio.sleep(0.7)  # more than two leases
        assert await service.requeue_stale(svc) == [], "a live job was re-queued: no heartbeat while it ran"
        job = await service.get(svc, job_id)
        assert job.state == "running"
        assert job.heartbeat_at > started.heartbeat_at
    finally:
        release.set()
        assert await asyncio.wait_for(run, DEADLINE_S) is True
    assert (await service.get(svc, job_id)).state == "succeeded"


async def test_a_run_that_lost_its_lease_cannot_overwrite_the_next(svc):
    first_started = asyncio.Event()
    release_first = asyncio.Event()

    async def work(svc, ctx):
        if ctx.attempt == 1:
            first_started.set()
            await release_first.wait()
            await ctx.progress(99, 99)
            return {"attempt": 1}
        await ctx.progress(1, 1)
        return {"attempt": ctx.attempt}

    svc.job_handler("test.work", work)
    job_id = await enqueue(svc, "test.work")
    zombie = asyncio.create_task(service.execute(svc, job_id))
    await asyncio.wait_for(first_started.wait(), DEADLINE_S)
    # its worker is presumed dead (say, a network partition): the job goes back to the queue and runs again
    assert await service.requeue_stale(svc, everything_running=True) == [job_id]
    assert await service.execute(svc, job_id) is True
    release_first.set()
    assert await asyncio.wait_for(zombie, DEADLINE_S) is True
    job = await service.get(svc, job_id)
    assert (job.state, job.result, job.attempts, job.progress, job.total) == ("succeeded", {"attempt": 2}, 2, 1, 1)


async def test_a_job_that_keeps_killing_its_worker_is_failed_not_requeued_forever(svc):
    svc.job_handler("test.poison", lambda svc, ctx: None)  # never reached
    poison = await crashed_job(svc, "test.poison", heartbeat_age=service.LEASE * 2, attempts=service.MAX_ATTEMPTS)
    again = await crashed_job(svc, "test.poison", heartbeat_age=service.LEASE * 2, attempts=service.MAX_ATTEMPTS - 1)
    assert await service.requeue_stale(svc) == [again]
    job = await service.get(svc, poison)
    assert job.state == "failed" and "abandoned" in job.error and job.finished_at is not None


async def test_runner_stop_does_not_raise_when_a_job_outlasts_it(svc):
    started = asyncio.Event()

    async def forever(svc, ctx):
        started.set()
        await asyncio.sleep(60)

    svc.job_handler("test.forever", forever)
    r = InProcessRunner(svc, poll_s=0.05)
    svc.db.doorbell = r
    await r.start()
    job_id = await enqueue(svc, "test.forever")
    await asyncio.wait_for(started.wait(), DEADLINE_S)
    await r.stop(timeout_s=0.2)
    # cut off: still running in the row, so the next start queues it again
    assert (await service.get(svc, job_id)).state == "running"
    assert await service.requeue_stale(svc, everything_running=True) == [job_id]


async def test_get_of_an_unknown_job_is_not_found(svc):
    with pytest.raises(service.JobNotFound):
        await service.get(svc, "0" * 32)
