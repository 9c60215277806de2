"""Celery at scale: the broker carries only ids ('run job N', 'relay the outbox'); the rows are the truth.

Tasks are thin and idempotent, ack late and retry only transient database errors.
Each worker process keeps one event loop and one set of services for its life
(its :class:`Runtime`), built on the first task, so after the pool has forked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from celery import Celery, signals
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError, ProgrammingError

from federation.bootstrap import freeze_startup_heap
from federation.services import Services
from federation.settings import Settings

log = logging.getLogger(__name__)

RUN_JOB = "twincity.run_job"
RELAY_OUTBOX = "twincity.relay_outbox"
SWEEP = "twincity.sweep"
SCHEDULED = "twincity.scheduled_jobs"

BuildServices = Callable[[Settings], Services]
TRANSIENT = (OperationalError, InterfaceError, DBAPIError, ConnectionError, TimeoutError)
NOT_TRANSIENT = (IntegrityError, ProgrammingError, DataError)

_runtimes: weakref.WeakSet[Runtime] = weakref.WeakSet()


class Runtime:
    """The event loop and services a worker process runs its tasks on, built on first use."""

    def __init__(self, settings: Settings, build: BuildServices | None = None) -> None:
        self.settings = settings
        self._build = build
        self._lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.svc: Services | None = None
        _runtimes.add(self)

    def run(self, coro_fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        with self._lock:  # one task at a time on the loop (solo and prefork pools run one anyway)
            if self.loop is None or self.svc is None:
                if self._build is None:
                    from federation.extensions import build_services

                    self._build = build_services
                self.svc = self._build(self.settings)
                self.loop = asyncio.new_event_loop()
            return self.loop.run_until_complete(coro_fn(self.svc, *args))

    def close(self) -> None:
        """Dispose the engine on the loop that opened its connections; the next task builds afresh."""
        with self._lock:
            loop, svc, self.loop, self.svc = self.loop, self.svc, None, None
            if loop is None:
                return
            try:
                if svc is not None:
                    loop.run_until_complete(svc.close())
            finally:
                loop.close()


def runtime_of(app: Celery) -> Runtime:
    return app.twincity_runtime  # type: ignore[attr-defined, no-any-return]


def make_celery(settings: Settings, *, build_services: BuildServices | None = None) -> Celery:
    """The Celery app; its tasks run on services built from ``settings`` (by ``build_services``, if given)."""
    if not settings.broker_url:
        raise ValueError("a Celery worker needs TWINCITY_BROKER_URL (redis:// or amqp://)")
    with contextlib.suppress(OSError):  # beat keeps its schedule there
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = Celery("twincity", broker=settings.broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        # a ring after commit waits on the broker: with the broker down, give up soon (the sweep finds the job)
        broker_connection_timeout=2.0,
        task_publish_retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5, "interval_max": 0.5},
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        # ``twincity worker`` runs beat too: its schedule state belongs in the data directory, not the cwd
        beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
        beat_schedule={
            "relay-outbox": {"task": RELAY_OUTBOX, "schedule": 5.0},
            "sweep": {"task": SWEEP, "schedule": 30.0},
            # the extensions' periodic jobs (``runner.SCHEDULE_KEY``): checked often, queued once per period
            "scheduled-jobs": {"task": SCHEDULED, "schedule": 5.0},
        },
    )
    runtime = Runtime(settings, build_services)
    app.twincity_runtime = runtime  # type: ignore[attr-defined]
    retry: dict[str, Any] = {
        "bind": True,
        "shared": False,  # a task of this app only: another app (another runtime) must not inherit it
        "autoretry_for": TRANSIENT,
        "dont_autoretry_for": NOT_TRANSIENT,
        "retry_backoff": True,
        "retry_jitter": True,
        "max_retries": 5,
    }

    @app.task(name=RUN_JOB, **retry)
    def run_job(self: Any, job_id: str) -> bool:
        from federation.jobs import service

        ran = runtime.run(service.execute, job_id)
        relay_pass()
        return bool(ran)

    @app.task(name=RELAY_OUTBOX, **retry)
    def relay_outbox(self: Any) -> int:
        return relay_pass()

    def relay_pass() -> int:
        """One pass of the outbox relay; after a full one, more may wait: the rest is relayed as another task,
        queued behind what is queued already rather than looped here."""
        from federation.jobs import outbox

        published = int(runtime.run(outbox.relay))
        if published >= outbox.BATCH:
            relay_outbox.delay()
        return published

    @app.task(name=SWEEP, shared=False)
    def sweep() -> int:
        """Re-queue jobs of dead workers and ring for every queued job (a lost doorbell costs a delay, not a job)."""
        from federation.jobs import service

        runtime.run(service.requeue_stale)
        ids = runtime.run(service.queued_ids)
        for job_id in ids:
            run_job.delay(job_id)
        return len(ids)

    @app.task(name=SCHEDULED, shared=False)
    def scheduled_jobs() -> int:
        """Queue the periodic jobs whose period has passed (the embedded runner does this in process)."""
        from federation.jobs import runner, service

        async def due(svc: Services) -> list[str]:
            return await service.queue_due(svc, dict(svc.extras.get(runner.SCHEDULE_KEY, {})))

        ids = runtime.run(due)
        for job_id in ids:
            run_job.delay(job_id)
        return len(ids)

    return app


@signals.worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is not None and SWEEP in app.tasks:
        app.tasks[SWEEP].delay()


@signals.worker_process_init.connect
def _on_worker_process_init(**_: Any) -> None:
    """Each forked pool process (the default prefork pool runs the tasks there) freezes its startup heap, as
    ``twincity run`` does."""
    freeze_startup_heap()


@signals.worker_process_shutdown.connect
@signals.worker_shutdown.connect
def _on_worker_shutdown(**_: Any) -> None:
    for runtime in list(_runtimes):
        try:
            runtime.close()
        except Exception:  # shutting down: log and go on
            log.warning("closing the worker runtime failed", exc_info=True)


class CeleryDoorbell:
    """Rings a Celery worker after commit; the send runs in a thread so the event loop never blocks."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    async def ring_outbox(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, lambda: self.app.send_task(RELAY_OUTBOX))

    async def ring_job(self, job_id: str) -> None:
        await asyncio.get_running_loop().run_in_executor(None, lambda: self.app.send_task(RUN_JOB, args=[job_id]))
