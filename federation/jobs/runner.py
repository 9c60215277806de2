"""The embedded default's worker: jobs and outbox relayed inside the service process, no broker server.

Chosen over kombu's filesystem transport because the database already is the
queue (job rows, outbox rows): a broker would only duplicate the doorbell, and
one process on one machine needs none. The runner wakes on a ring after
commit and also polls, so rows written by another process (the CLI, a crashed
run) are found too. At scale, set a broker URL and run ``twincity worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time

from federation.jobs import outbox, service
from federation.services import Services

log = logging.getLogger(__name__)

# ``Services.extras`` key: {job kind: seconds between runs}. The runner queues each kind once per period (the first
# one period after start), so periodic work (notices, hold-shelf expiry) needs no scheduler server either.
SCHEDULE_KEY = "jobs.schedule"
# True in the runner's task and every task it starts (wait_for, gather copy the context): what the background does
IN_BACKGROUND: contextvars.ContextVar[bool] = contextvars.ContextVar("twincity_in_background", default=False)

# Woken after a pass that took less than a batch, the runner waits this long before the next: under load, commits
# ring every few milliseconds, and a pass per ring rebuilt and committed the search index for one or two loans at a
# time. With 20 desks lending and returning (bench/circulation.py, PostgreSQL), 0.1 s took the server's CPU per
# operation from 5.44-5.59 to 5.07-5.32 ms and its throughput from 203-204 to 205-213 operations/s; the index's lag
# behind the loans went from 0.19 to 0.25 s (p50; the promise is 2 s). After a full pass the next one starts at once.
LINGER_S = 0.1


class InProcessRunner:
    """A doorbell and the worker it wakes, in one asyncio task."""

    def __init__(
        self, svc: Services, *, poll_s: float = 2.0, batch: int = outbox.BATCH, linger_s: float = LINGER_S
    ) -> None:
        self.svc = svc
        self.poll_s = poll_s
        self.batch = batch
        self.linger_s = linger_s
        self._full = False  # the last relay pass took a whole batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_queued: dict[str, float] = {}

    async def ring_outbox(self) -> None:
        self._wake.set()

    async def ring_job(self, job_id: str) -> None:
        self._wake.set()

    async def start(self) -> None:
        self._stopping = False
        await service.requeue_stale(self.svc, everything_running=True)
        self._task = asyncio.create_task(self._loop(), name="twincity-runner")

    async def stop(self, *, timeout_s: float = 30.0) -> None:
        """Finish the job in hand (up to ``timeout_s``, then cancel it: the next start queues it again)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._task, timeout=timeout_s)
            self._task = None

    async def _queue_periodic(self) -> None:
        now = time.monotonic()
        for kind, every_s in dict(self.svc.extras.get(SCHEDULE_KEY, {})).items():
            last = self._last_queued.setdefault(kind, now)
            if now - last < every_s:
                continue
            self._last_queued[kind] = now
            async with self.svc.db.uow() as uow:
                await service.enqueue(uow, kind, {}, created_by="system:schedule")
                await uow.commit()

    async def run_once(self) -> None:
        await self._queue_periodic()
        await self._relay()
        for job_id in await service.queued_ids(self.svc):
            if self._stopping:
                return
            await service.execute(self.svc, job_id)
            await self._relay()

    async def _relay(self) -> None:
        self._full = await outbox.relay(self.svc, batch=self.batch) >= self.batch
        if self._full:
            self._wake.set()  # a full pass: more may wait, so come back at once (after the queued jobs' turn)

    async def _loop(self) -> None:
        IN_BACKGROUND.set(True)
        while not self._stopping:
            self._wake.clear()
            try:
                await self.run_once()
            except Exception:  # the loop must survive a bad row or a lost connection
                log.exception("background runner pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)
            if self.linger_s and not self._full and not self._stopping:
                await asyncio.sleep(self.linger_s)  # what commits soon after this one rang is taken together
