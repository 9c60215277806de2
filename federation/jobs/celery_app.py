"""Celery at scale: the broker carries only ids ('run job N', 'relay the outbox'); the rows are the truth.

Tasks are thin and idempotent, ack late and retry only transient database errors.
Each worker process keeps one event loop and one set of services for its life.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from celery import Celery, signals
from sqlalchemy.exc import DBAPIError, OperationalError

from federation.settings import Settings, load_settings

log = logging.getLogger(__name__)

RUN_JOB = "twincity.run_job"
RELAY_OUTBOX = "twincity.relay_outbox"
SWEEP = "twincity.sweep"


class _Runtime:
    loop: asyncio.AbstractEventLoop | None = None
    svc: Any = None
    settings: Settings | None = None

    @classmethod
    def run(cls, coro_fn: Any, *args: Any) -> Any:
        if cls.loop is None:
            from federation.extensions import build_services

            cls.loop = asyncio.new_event_loop()
            cls.settings = cls.settings or load_settings()
            cls.svc = build_services(cls.settings)
        return cls.loop.run_until_complete(coro_fn(cls.svc, *args))


def make_celery(settings: Settings) -> Celery:
    if not settings.broker_url:
        raise ValueError("a Celery worker needs TWINCITY_BROKER_URL (redis:// or amqp://)")
    app = Celery("twincity", broker=settings.broker_url)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        worker_hijack_root_logger=False,
        beat_schedule={
            "relay-outbox": {"task": RELAY_OUTBOX, "schedule": 5.0},
            "sweep": {"task": SWEEP, "schedule": 30.0},
        },
    )
    _Runtime.settings = settings
    transient = (OperationalError, DBAPIError, ConnectionError)

    @app.task(name=RUN_JOB, bind=True, autoretry_for=transient, retry_backoff=True, retry_jitter=True, max_retries=5)
    def run_job(self: Any, job_id: str) -> bool:
        from federation.jobs import outbox, service

        ran = _Runtime.run(service.execute, job_id)
        _Runtime.run(outbox.relay)
        return bool(ran)

    @app.task(
        name=RELAY_OUTBOX, bind=True, autoretry_for=transient, retry_backoff=True, retry_jitter=True, max_retries=5
    )
    def relay_outbox(self: Any) -> int:
        from federation.jobs import outbox

        return int(_Runtime.run(outbox.relay))

    @app.task(name=SWEEP)
    def sweep() -> int:
        """Re-queue jobs of dead workers and ring for every queued job (a lost doorbell costs a delay, not a job)."""
        from federation.jobs import service

        _Runtime.run(service.requeue_stale)
        ids = _Runtime.run(service.queued_ids)
        for job_id in ids:
            run_job.delay(job_id)
        return len(ids)

    return app


@signals.worker_ready.connect
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    app = getattr(sender, "app", None)
    if app is not None and SWEEP in app.tasks:
        app.tasks[SWEEP].delay()


class CeleryDoorbell:
    """Rings a Celery worker after commit; the send runs in a thread so the event loop never blocks."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    async def ring_outbox(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, lambda: self.app.send_task(RELAY_OUTBOX))

    async def ring_job(self, job_id: str) -> None:
        await asyncio.get_running_loop().run_in_executor(None, lambda: self.app.send_task(RUN_JOB, args=[job_id]))
