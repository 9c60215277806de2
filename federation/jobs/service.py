"""Running background jobs whose state lives in the database.

Whoever executes a job (the in-process runner or a Celery worker) first claims
it with one conditional UPDATE (queued -> running), so two workers never run
the same job. While its handler runs, a job beats a heartbeat; a job whose
heartbeat is older than the lease was left by a dead process and is queued
again. Every write a run makes afterwards (progress, the outcome) is fenced by
its attempt number, so a run that lost its lease cannot overwrite the next one.
A job re-queued ``MAX_ATTEMPTS`` times (it keeps killing its worker) is failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hashlib
import logging
import traceback
from typing import Any

from sqlalchemy import or_, select, text, update

from federation.db import UnitOfWork, utcnow
from federation.errors import NotFound
from federation.jobs.models import Job, JobState
from federation.services import Services

log = logging.getLogger(__name__)
LEASE = dt.timedelta(seconds=60)
HEARTBEAT_S = 15.0  # well inside the lease
MAX_ATTEMPTS = 5
SCHEDULED_BY = "system:schedule"


class JobNotFound(NotFound):
    code = "jobs.not_found"


@dataclasses.dataclass
class JobContext:
    """What a job handler gets: its parameters and a way to report progress."""

    svc: Services
    job_id: str
    params: dict[str, Any]
    attempt: int = 0

    async def progress(self, done: int, total: int | None = None, **counts: Any) -> None:
        values: dict[str, Any] = {"progress": done, "heartbeat_at": utcnow()}
        if total is not None:
            values["total"] = total
        if counts:
            values["counts"] = counts
        async with self.svc.db.uow() as uow:
            await uow.session.execute(update(Job).where(*_owned(self.job_id, self.attempt)).values(**values))
            await uow.commit()


def _owned(job_id: str, attempt: int) -> tuple[Any, ...]:
    """The rows a run may still write: its job, running, and not claimed again since."""
    return (Job.id == job_id, Job.state == JobState.RUNNING.value, Job.attempts == attempt)


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


@dataclasses.dataclass(frozen=True)
class _Claim:
    kind: str
    params: dict[str, Any]
    attempt: int


async def _claim(svc: Services, job_id: str) -> _Claim | None:
    now = utcnow()
    async with svc.db.uow() as uow:
        res = await uow.session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED.value)
            .values(state=JobState.RUNNING.value, started_at=now, heartbeat_at=now, attempts=Job.attempts + 1)
            .returning(Job.kind, Job.params, Job.attempts)
        )
        row = res.first()
        await uow.commit()
    return None if row is None else _Claim(row.kind, dict(row.params or {}), row.attempts)


async def _finish(
    svc: Services,
    job_id: str,
    attempt: int,
    state: JobState,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> None:
    async with svc.db.uow() as uow:
        res = await uow.session.execute(
            update(Job)
            .where(*_owned(job_id, attempt))
            .values(state=state.value, finished_at=utcnow(), result=result, error=error)
        )
        await uow.commit()
    if res.rowcount != 1:
        log.warning("job %s attempt %d lost its lease; its outcome (%s) is dropped", job_id, attempt, state.value)


async def _beat(svc: Services, job_id: str, attempt: int) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        try:
            async with svc.db.uow() as uow:
                await uow.session.execute(update(Job).where(*_owned(job_id, attempt)).values(heartbeat_at=utcnow()))
                await uow.commit()
        except Exception:  # a missed beat is not fatal; a lease of missed beats is
            log.warning("job %s heartbeat failed", job_id, exc_info=True)


async def execute(svc: Services, job_id: str) -> bool:
    """Run one job if it is still queued; returns whether this call ran it."""
    claim = await _claim(svc, job_id)
    if claim is None:
        return False
    handler = svc.job_handlers.get(claim.kind)
    if handler is None:
        await _finish(svc, job_id, claim.attempt, JobState.FAILED, error=f"no handler for job kind {claim.kind}")
        return True
    beat = asyncio.create_task(_beat(svc, job_id, claim.attempt), name=f"twincity-job-heartbeat-{job_id}")
    try:
        result = await handler(svc, JobContext(svc, job_id, claim.params, claim.attempt))
    except Exception as e:  # noqa: BLE001 - a job's failure is recorded, not raised into the worker
        log.warning("job %s (%s) failed: %s", job_id, claim.kind, e)
        log.debug("%s", traceback.format_exc())
        outcome: tuple[JobState, dict[str, Any] | None, str | None] = (
            JobState.FAILED,
            None,
            f"{e.__class__.__name__}: {e}"[:2000],
        )
    else:
        outcome = (JobState.SUCCEEDED, result or {}, None)
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
    state, result, error = outcome
    await _finish(svc, job_id, claim.attempt, state, result=result, error=error)
    return True


async def queued_ids(svc: Services, limit: int = 50) -> list[str]:
    async with svc.db.reader() as s:
        q = select(Job.id).where(Job.state == JobState.QUEUED.value).order_by(Job.created_at).limit(limit)
        return list((await s.execute(q)).scalars())


async def requeue_stale(svc: Services, *, everything_running: bool = False) -> list[str]:
    """Queue again the jobs a dead process left running (all of them, for a single-process deployment).

    The lease is checked in the UPDATE itself, so a job that beat in the meantime is left alone.
    """
    cutoff = utcnow() - LEASE
    stale = [Job.state == JobState.RUNNING.value]
    if not everything_running:
        stale.append(or_(Job.heartbeat_at < cutoff, Job.heartbeat_at.is_(None)))
    async with svc.db.uow() as uow:
        gave_up = await uow.session.execute(
            update(Job)
            .where(*stale, Job.attempts >= MAX_ATTEMPTS)
            .values(
                state=JobState.FAILED.value,
                finished_at=utcnow(),
                error=f"abandoned: its worker stopped during each of {MAX_ATTEMPTS} attempts",
            )
            .returning(Job.id)
        )
        failed = list(gave_up.scalars())
        res = await uow.session.execute(update(Job).where(*stale).values(state=JobState.QUEUED.value).returning(Job.id))
        ids = list(res.scalars())
        await uow.commit()
    if failed:
        log.error("failed %d job(s) whose worker stopped during each of %d attempts", len(failed), MAX_ATTEMPTS)
    if ids:
        log.warning("re-queued %d job(s) left running by a stopped process", len(ids))
    return ids


async def queue_due(svc: Services, schedule: dict[str, float], *, now: dt.datetime | None = None) -> list[str]:
    """With a broker, the periodic work the embedded runner queues by itself (notices, hold-shelf expiry,
    connector syncs): each kind whose latest scheduled job, in any state, was created more than its period ago is
    queued again. The jobs table is the schedule's memory, so a restarted beat neither skips nor repeats a period;
    the check and the insert are one write transaction per kind (serialised on SQLite, under an advisory lock on
    PostgreSQL), so two beats at once queue it once. A job someone started by hand does not move the schedule."""
    now = now or utcnow()
    queued: list[str] = []
    for kind, every_s in sorted(schedule.items()):
        async with svc.db.uow() as uow:
            await _serialise(uow, f"schedule:{kind}")
            q = (
                select(Job.created_at)
                .where(Job.kind == kind, Job.created_by == SCHEDULED_BY)
                .order_by(Job.created_at.desc())
                .limit(1)
            )
            last = (await uow.session.execute(q)).scalar_one_or_none()
            if last is not None and (now - last).total_seconds() < every_s:
                continue
            job = await enqueue(uow, kind, {}, created_by=SCHEDULED_BY)
            await uow.commit()
            queued.append(job.id)
    return queued


async def enqueue_unless_pending(svc: Services, kind: str, *, created_by: str) -> str | None:
    """Queue a job of ``kind`` unless one is queued or running; the new job's id, or None. The check and the insert
    are serialised as ``queue_due``'s are, so processes starting together queue it once."""
    async with svc.db.uow() as uow:
        await _serialise(uow, f"pending:{kind}")
        pending = select(Job.id).where(Job.kind == kind, Job.state.in_((JobState.QUEUED.value, JobState.RUNNING.value)))
        if (await uow.session.execute(pending.limit(1))).first() is not None:
            return None
        job = await enqueue(uow, kind, {}, created_by=created_by)
        await uow.commit()
    return job.id


async def _serialise(uow: UnitOfWork, name: str) -> None:
    """Hold ``name``'s lock until the transaction ends: an advisory lock on PostgreSQL (SQLite has one writer)."""
    if uow.session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        await uow.session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
