"""Jobs and the outbox through a real broker and a real Celery worker (in this process, in its own thread).

The worker builds its own services (engine, event loop) from the same settings, as ``twincity worker`` does;
the test watches the rows. Outside CI, an unset or unreachable broker skips these tests; in CI it fails them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from kombu import Connection
from sqlalchemy import select, update

from federation.db import utcnow
from federation.extensions import build_services
from federation.jobs import outbox, service
from federation.jobs.celery_app import SWEEP, CeleryDoorbell, make_celery, runtime_of
from federation.jobs.models import Job, JobState
from federation.services import Services
from tests.conftest import TEST_BROKER_URL, make_settings

pytestmark = pytest.mark.broker

IN_CI = os.environ.get("CI", "").lower() == "true"
# RabbitMQ is tried when named, or (outside CI) at its usual local address
AMQP_URL = os.environ.get("TWINCITY_TEST_AMQP_URL") or (None if IN_CI else "amqp://guest:guest@127.0.0.1:5672//")
DEADLINE_S = 8.0


def require_broker(url: str | None, name: str = "TWINCITY_TEST_BROKER_URL") -> str:
    """The broker's URL if it answers; otherwise skip (a developer's machine) or fail (CI)."""
    if not url:
        if IN_CI and name == "TWINCITY_TEST_BROKER_URL":
            pytest.fail(f"CI runs the broker tests: set {name}")
        pytest.skip(f"{name} is not set")
    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
    except Exception as e:  # noqa: BLE001 - any failure to connect means the broker is not there
        if IN_CI:
            pytest.fail(f"the broker at {url} is unreachable in CI: {e!r}")
        pytest.skip(f"no broker at {url}: {e!r}")
    return url


@pytest.fixture
def broker_url() -> str:
    return require_broker(TEST_BROKER_URL)


class Seen:
    """What the worker's handlers saw, from the worker's thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[Any] = []
        self.threads: set[str] = set()

    def add(self, item: Any) -> None:
        with self.lock:
            self.items.append(item)
            self.threads.add(threading.current_thread().name)


def worker_services(seen: Seen):
    async def double(svc: Services, ctx: service.JobContext) -> dict[str, Any]:
        seen.add(("job", ctx.job_id))
        await ctx.progress(1, 1, doubled=1)
        return {"value": ctx.params["n"] * 2}

    async def on_event(svc: Services, payload: dict[str, Any]) -> None:
        seen.add(("event", payload["n"]))

    def build(settings) -> Services:
        svc = build_services(settings)
        svc.job_handler("test.double", double)
        svc.on_event("test.celery_event", on_event)
        return svc

    return build


@contextlib.contextmanager
def celery_worker(app: Celery) -> Iterator[None]:
    """A real worker (solo pool) consuming this app's own queue; its runtime is closed afterwards."""
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            yield
    finally:
        # the runtime's loop is closed outside the test's running loop, as the worker's own thread would
        closer = threading.Thread(target=runtime_of(app).close)
        closer.start()
        closer.join(10)
        with contextlib.suppress(Exception), app.connection_for_write() as conn:
            conn.default_channel.queue_delete(app.conf.task_default_queue)


def celery_app(tmp_path, settings, url: str, seen: Seen) -> Celery:
    # the worker gets the test's database and secrets (same data directory), and a queue of its own
    worker_settings = make_settings(tmp_path, database_url=settings.database_url, broker_url=url)
    assert worker_settings.secret_bytes("index_key") == settings.secret_bytes("index_key")
    app = make_celery(worker_settings, build_services=worker_services(seen))
    app.conf.task_default_queue = f"twincity-test-{uuid.uuid4().hex[:12]}"
    app.conf.broker_connection_timeout = 3
    # AMQP: a short heartbeat gives the worker's event loop a timer, so it notices the stop within a second
    app.conf.broker_heartbeat = 2
    return app


async def enqueue(svc: Services, kind: str, params: dict[str, Any]) -> str:
    async with svc.db.uow() as uow:
        job = await service.enqueue(uow, kind, params, created_by="test")
        await uow.commit()
    return job.id


async def wait_for_state(svc: Services, job_id: str, *states: str) -> Job:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        job = await service.get(svc, job_id)
        if job.state in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.state} after {DEADLINE_S}s"
        await asyncio.sleep(0.05)


async def run_a_job_through(url: str, svc: Services, settings, tmp_path) -> None:
    seen = Seen()
    app = celery_app(tmp_path, settings, url, seen)
    svc.db.doorbell = CeleryDoorbell(app)
    with celery_worker(app):
        job_id = await enqueue(svc, "test.double", {"n": 21})
        job = await wait_for_state(svc, job_id, "succeeded", "failed")
    assert job.state == "succeeded", job.error
    assert (job.result, job.progress, job.total, job.counts, job.attempts) == ({"value": 42}, 1, 1, {"doubled": 1}, 1)
    assert seen.items == [("job", job_id)]
    assert threading.current_thread().name not in seen.threads, "the job ran in the test's thread, not the worker's"


async def test_a_job_rung_through_redis_is_run_by_the_worker(svc, settings, tmp_path, broker_url):
    await run_a_job_through(broker_url, svc, settings, tmp_path)


async def test_a_job_rung_through_rabbitmq_is_run_by_the_worker(svc, settings, tmp_path):
    url = require_broker(AMQP_URL, "TWINCITY_TEST_AMQP_URL")
    await run_a_job_through(url, svc, settings, tmp_path)


async def test_the_worker_relays_the_outbox_when_rung(svc, settings, tmp_path, broker_url):
    seen = Seen()
    app = celery_app(tmp_path, settings, broker_url, seen)
    svc.db.doorbell = CeleryDoorbell(app)
    with celery_worker(app):
        async with svc.db.uow() as uow:
            uow.emit("test.celery_event", n=1)
            uow.emit("test.celery_event", n=2)
            await uow.commit()
        deadline = time.monotonic() + DEADLINE_S
        while await outbox.pending(svc):
            assert time.monotonic() < deadline, "the worker did not relay the outbox"
            await asyncio.sleep(0.05)
    assert sorted(seen.items) == [("event", 1), ("event", 2)]


async def test_a_backlog_larger_than_a_pass_is_relayed_on_one_ring(svc, settings, tmp_path, broker_url):
    # one commit, one ring, two and a half passes of events: the worker comes back for the rest by itself (the
    # beat's periodic relay does not run in this worker)
    seen = Seen()
    app = celery_app(tmp_path, settings, broker_url, seen)
    svc.db.doorbell = CeleryDoorbell(app)
    count = outbox.BATCH * 2 + outbox.BATCH // 2
    with celery_worker(app):
        async with svc.db.uow() as uow:
            for n in range(count):
                uow.emit("test.celery_event", n=n)
            await uow.commit()
        deadline = time.monotonic() + DEADLINE_S
        while left := await outbox.pending(svc):
            assert time.monotonic() < deadline, f"{left} of {count} events were left pending"
            await asyncio.sleep(0.05)
    assert sorted(n for _, n in seen.items) == list(range(count))


async def test_the_sweep_finds_jobs_whose_message_was_lost(svc, settings, tmp_path, broker_url):
    seen = Seen()
    app = celery_app(tmp_path, settings, broker_url, seen)
    # committed without a ring (the process died before sending, or the broker lost the message)
    lost = await enqueue(svc, "test.double", {"n": 1})
    # and one left running by a worker that died (its heartbeat is older than the lease)
    dead = await enqueue(svc, "test.double", {"n": 2})
    old = utcnow() - service.LEASE * 2
    async with svc.db.uow() as uow:
        await uow.session.execute(
            update(Job)
            .where(Job.id == dead)
            .values(state=JobState.RUNNING.value, started_at=old, heartbeat_at=old, attempts=1)
        )
        await uow.commit()
    with celery_worker(app):
        await asyncio.sleep(0.3)
        assert (await service.get(svc, lost)).state == "queued", "nobody rang, yet the job ran"
        await asyncio.get_running_loop().run_in_executor(None, lambda: app.send_task(SWEEP))
        first = await wait_for_state(svc, lost, "succeeded", "failed")
        second = await wait_for_state(svc, dead, "succeeded", "failed")
    assert (first.state, first.result, first.attempts) == ("succeeded", {"value": 2}, 1)
    assert (second.state, second.result, second.attempts) == ("succeeded", {"value": 4}, 2)
    assert sorted(seen.items) == sorted([("job", lost), ("job", dead)])


async def test_a_broker_that_is_down_does_not_fail_the_commit(svc, settings, tmp_path):
    # nothing listens on this port: the ring fails after commit; the job waits for the next sweep
    down = make_settings(tmp_path, database_url=settings.database_url, broker_url="redis://127.0.0.1:1/0")
    svc.db.doorbell = CeleryDoorbell(make_celery(down))
    started = time.monotonic()
    job_id = await enqueue(svc, "test.double", {"n": 1})
    assert time.monotonic() - started < 4, "a request would wait this long on a broker that is down"
    assert (await service.get(svc, job_id)).state == "queued"


async def test_the_beat_queues_the_extensions_periodic_jobs_once_per_period(svc, settings, tmp_path, broker_url):
    """With a broker the embedded runner does not run: the worker's beat task queues what it would have."""
    from federation.jobs.celery_app import SCHEDULED
    from federation.jobs.runner import SCHEDULE_KEY

    seen = Seen()
    build = worker_services(seen)

    def with_schedule(worker_settings) -> Services:
        built = build(worker_settings)
        built.extras[SCHEDULE_KEY] = {"test.double": 3600.0}
        return built

    worker_settings = make_settings(tmp_path, database_url=settings.database_url, broker_url=broker_url)
    app = make_celery(worker_settings, build_services=with_schedule)
    app.conf.task_default_queue = f"twincity-test-{uuid.uuid4().hex[:12]}"
    assert app.conf.beat_schedule["scheduled-jobs"]["task"] == SCHEDULED
    with celery_worker(app):
        send = asyncio.get_running_loop().run_in_executor
        await send(None, lambda: app.send_task(SCHEDULED))
        await send(None, lambda: app.send_task(SCHEDULED))  # within the period: nothing more
        deadline = time.monotonic() + DEADLINE_S
        while True:
            async with svc.db.reader() as s:
                jobs = list((await s.execute(select(Job).where(Job.kind == "test.double"))).scalars())
            if jobs and all(j.state in ("succeeded", "failed") for j in jobs):
                break
            assert time.monotonic() < deadline, "the scheduled job did not run"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
    async with svc.db.reader() as s:
        jobs = list((await s.execute(select(Job).where(Job.kind == "test.double"))).scalars())
    assert len(jobs) == 1 and jobs[0].created_by == "system:schedule"


async def test_queue_due_remembers_the_last_run_in_the_jobs_table(svc):
    t0 = utcnow()
    assert len(await service.queue_due(svc, {"a.kind": 60.0, "b.kind": 600.0}, now=t0)) == 2
    assert await service.queue_due(svc, {"a.kind": 60.0, "b.kind": 600.0}, now=t0 + dt.timedelta(seconds=30)) == []
    again = await service.queue_due(svc, {"a.kind": 60.0, "b.kind": 600.0}, now=t0 + dt.timedelta(seconds=61))
    assert len(again) == 1


async def test_two_beats_at_once_queue_a_period_once_and_a_manual_run_does_not_count(svc):
    await enqueue(svc, "c.kind", {})  # started by hand: the schedule still runs
    t0 = utcnow()
    first, second = await asyncio.gather(
        service.queue_due(svc, {"c.kind": 60.0}, now=t0), service.queue_due(svc, {"c.kind": 60.0}, now=t0)
    )
    assert len(first) + len(second) == 1
