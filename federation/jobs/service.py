"""Running background jobs whose state lives in the database.

Whoever executes a job (the in-process runner or a Celery worker) first claims
it with one conditional UPDATE (queued -> running), so two workers never run
the same job. A running job beats a heartbeat; a job whose heartbeat is older
than the lease was left by a dead process and is queued again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import traceback
from typing import Any

from sqlalchemy import select, update

from federation.db import UnitOfWork, utcnow
from federation.errors import NotFound
from federation.jobs.models import Job, JobState
from federation.services import Services

log = logging.getLogger(__name__)
LEASE = dt.timedelta(seconds=60)


class JobNotFound(NotFound):
    code = "jobs.not_found"


@dataclasses.dataclass
class JobContext:
    """What a job handler gets: its parameters and a way to report progress."""

    svc: Services
    job_id: str
    params: dict[str, Any]

    async def progress(self, done: int, total: int | None = None, **counts: Any) -> None:
        values: dict[str, Any] = {"progress": done, "heartbeat_at": utcnow()}
        if total is not None:
            values["total"] = total
        if counts:
            values["counts"] = counts
        async with self.svc.db.uow() as uow:
            await uow.session.execute(update(Job).where(Job.id == self.job_id).values(**values))
            await uow.commit()


async def enqueue(uow: UnitOfWork, kind: str, params: dict[str, Any], *, created_by: str) -> Job:
    job = Job(kind=kind, params=params, created_by=created_by, state=JobState.QUEUED.value)
    uow.session.add(job)
    await uow.session.flush()
    uow.job_enqueued(job.id)
    return job


async def get(svc: Services, job_id: str) -> Job:
    async with svc.db.reader() as s:
        job = await s.get(Job, job_id)
    if job is None:
        raise JobNotFound(f"no job {job_id}")
    return job


async def _claim(svc: Services, job_id: str) -> bool:
    now = utcnow()
    async with svc.db.uow() as uow:
        res = await uow.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED.value)
            .values(state=JobState.RUNNING.value, started_at=now, heartbeat_at=now, attempts=Job.attempts + 1)
        )
        await uow.commit()
    return res.rowcount == 1


async def _finish(
    svc: Services, job_id: str, state: JobState, *, result: dict[str, Any] | None = None, error: str | None = None
) -> None:
    async with svc.db.uow() as uow:
        await uow.session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(state=state.value, finished_at=utcnow(), result=result, error=error)
        )
        await uow.commit()


async def execute(svc: Services, job_id: str) -> bool:
    """Run one job if it is still queued; returns whether this call ran it."""
    if not await _claim(svc, job_id):
        return False
    async with svc.db.reader() as s:
        job = await s.get(Job, job_id)
    assert job is not None
    handler = svc.job_handlers.get(job.kind)
    if handler is None:
        await _finish(svc, job_id, JobState.FAILED, error=f"no handler for job kind {job.kind}")
        return True
    try:
        result = await handler(svc, JobContext(svc, job_id, dict(job.params)))
    except Exception as e:  # noqa: BLE001 - a job's failure is recorded, not raised into the worker
        log.warning("job %s (%s) failed: %s", job_id, job.kind, e)
        await _finish(svc, job_id, JobState.FAILED, error=f"{e.__class__.__name__}: {e}"[:2000])
        log.debug("%s", traceback.format_exc())
        return True
    await _finish(svc, job_id, JobState.SUCCEEDED, result=result or {})
    return True


async def queued_ids(svc: Services, limit: int = 50) -> list[str]:
    async with svc.db.reader() as s:
        q = select(Job.id).where(Job.state == JobState.QUEUED.value).order_by(Job.created_at).limit(limit)
        return list((await s.execute(q)).scalars())


async def requeue_stale(svc: Services, *, everything_running: bool = False) -> list[str]:
    """Queue again the jobs a dead process left running (all of them, for a single-process deployment)."""
    cutoff = utcnow() - LEASE
    async with svc.db.uow() as uow:
        q = select(Job.id).where(Job.state == JobState.RUNNING.value)
        if not everything_running:
            q = q.where(Job.heartbeat_at < cutoff)
        ids = list((await uow.session.execute(q)).scalars())
        if ids:
            await uow.session.execute(
                update(Job)
                .where(Job.id.in_(ids), Job.state == JobState.RUNNING.value)
                .values(state=JobState.QUEUED.value)
            )
        await uow.commit()
    if ids:
        log.warning("re-queued %d job(s) left running by a stopped process", len(ids))
    return ids
