"""Sync runs: a kind's ``sync`` function pulls a partner's changes through a :class:`SyncRun`, batch by batch.

The contract a kind's sync follows (see ``connectors/README.md``):

* fetch a batch over HTTP with no unit of work open;
* open one unit of work, apply the batch with idempotent upserts, then ``await run.commit(uow, new_watermark)``,
  which advances the watermark in that same transaction and commits it;
* repeat until the partner has nothing newer.

A crash or an error anywhere rolls back the batch in hand together with its watermark, so a re-run resumes exactly
after the last committed batch: nothing lost, nothing applied twice.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from typing import Any

from sqlalchemy import update

from connectors.framework import service
from connectors.framework.errors import ConnectorError, InvalidConnector
from connectors.framework.http import ConnectorClient
from connectors.framework.models import Connector
from connectors.framework.service import LoadedConnector
from federation.audit.service import Record
from federation.db import UnitOfWork, utcnow
from federation.jobs.service import JobContext
from federation.services import Services

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SyncRun:
    """One run of one connector's sync: its client, its watermark as committed so far, and its counts."""

    svc: Services
    connector: LoadedConnector
    client: ConnectorClient
    actor: str
    watermark: str | None
    job: JobContext | None = None
    counts: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    batches: int = 0

    async def commit(self, uow: UnitOfWork, new_watermark: str | None) -> None:
        """Advance the watermark to ``new_watermark`` in ``uow`` and commit the batch with it."""
        if new_watermark != self.watermark:
            await service.advance_watermark(uow, self.connector.name, self.watermark, new_watermark)
        await uow.commit()
        self.watermark = new_watermark
        self.batches += 1
        if self.job is not None:
            await self.job.progress(self.counts.total(), None, **dict(self.counts))


async def run_sync(svc: Services, name: str, *, actor: str, job: JobContext | None = None) -> dict[str, Any]:
    """Run connector ``name``'s sync once; returns its counts and watermark. A failure is written to the
    connector's health and raised (a :class:`ConnectorError` for the partner's failures)."""
    async with service.open_client(svc, name) as client:
        connector = client.connector
        kind = service.kinds(svc).get(connector.kind)
        if kind is None or kind.sync is None:
            raise InvalidConnector(f"connector {name}'s kind {connector.kind} has no sync here")
        run = SyncRun(svc, connector, client, actor, connector.watermark, job)
        try:
            await kind.sync(run)
        except BaseException as e:
            await service.save_health(svc, name, client, counts=dict(run.counts), ran=True)
            if client.last_error is not e:
                await service.record_failure(svc, name, e)
            await _audit(svc, run, outcome="failed")
            raise
        await service.save_health(svc, name, client, counts=dict(run.counts), ran=True)
        if client.calls == 0:
            async with svc.db.uow() as uow:  # save_health only writes after calls; a run with none still ran
                await uow.session.execute(update(Connector).where(Connector.name == name).values(last_run_at=utcnow()))
                await uow.commit()
        await _audit(svc, run, outcome="ok")
    return {"connector": name, "watermark": run.watermark, "batches": run.batches, **dict(run.counts)}


async def _audit(svc: Services, run: SyncRun, *, outcome: str) -> None:
    """One entry per run: which connector, how far, how much (counts only: the changes' own entries name persons)."""
    try:
        async with svc.db.uow() as uow:
            await svc.audit(
                uow,
                Record(
                    action="connectors.sync",
                    actor=run.actor,
                    outcome=outcome,
                    actor_institution=run.connector.member_code,
                    details={"connector": run.connector.name, "watermark": run.watermark, **dict(run.counts)},
                ),
            )
            await uow.commit()
    except Exception:  # the run's own outcome stands; a lost audit line of counts is logged
        log.warning("connector %s: could not audit the run", run.connector.name, exc_info=True)


def job_handler(kind: str) -> Any:
    """The job of a kind: ``params.name`` syncs that connector; no name syncs every enabled connector of the kind
    that is due (its ``schedule_s`` has passed since its last run), which is what the periodic schedule queues."""

    async def handle(svc: Services, ctx: JobContext) -> dict[str, Any]:
        name = ctx.params.get("name")
        actor = str(ctx.params.get("actor") or "system:connectors")
        if name:
            return await run_sync(svc, str(name), actor=actor, job=ctx)
        results: dict[str, Any] = {}
        failures: list[str] = []
        for connector in await service.of_kind(svc, kind):
            if not await _due(svc, connector):
                continue
            try:
                results[connector.name] = await run_sync(svc, connector.name, actor=actor, job=ctx)
            except Exception as e:  # noqa: BLE001 - one broken partner must not starve the others
                failures.append(f"{connector.name}: {getattr(e, 'code', e.__class__.__name__)}")
        if failures:
            raise ConnectorError(f"{len(failures)} connector(s) failed: {', '.join(failures)}")
        return results

    return handle


async def _due(svc: Services, connector: LoadedConnector) -> bool:
    every = connector.config.schedule_s
    if every is None:
        return True
    async with svc.db.reader() as s:
        row = await s.get(Connector, connector.name)
    last = row.last_run_at if row is not None else None
    return last is None or (utcnow() - last).total_seconds() >= every
