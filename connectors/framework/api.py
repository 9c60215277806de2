"""The connectors' health over HTTP (administrators): every connector's state, and starting a sync by hand."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web

from connectors.framework import service
from connectors.framework.errors import ConnectorNotFound, InvalidConnector
from connectors.framework.models import Connector
from federation.app import principal, services
from federation.jobs import service as jobs
from federation.web.routing import Routes, staff
from federation.web.schema import Output

routes = Routes("connectors")
ADMIN = staff("admin")


class ConnectorHealth(Output):
    name: str
    kind: str
    member_code: str
    base_url: str
    enabled: bool
    circuit_state: str
    consecutive_failures: int
    circuit_opened_at: dt.datetime | None
    last_run_at: dt.datetime | None
    last_success_at: dt.datetime | None
    last_error: str | None
    last_error_code: str | None
    last_error_at: dt.datetime | None
    watermark: str | None
    last_counts: dict[str, Any]
    schedule_s: float | None


class ConnectorList(Output):
    items: list[ConnectorHealth]


class SyncAccepted(Output):
    job_id: str
    state: str


def health_of(row: Connector) -> ConnectorHealth:
    config = row.config or {}
    return ConnectorHealth(
        name=row.name,
        kind=row.kind,
        member_code=row.member_code,
        base_url=str(config.get("base_url", "")),
        enabled=bool(config.get("enabled", True)),
        circuit_state=row.circuit_state,
        consecutive_failures=row.consecutive_failures,
        circuit_opened_at=row.circuit_opened_at,
        last_run_at=row.last_run_at,
        last_success_at=row.last_success_at,
        last_error=row.last_error,
        last_error_code=row.last_error_code,
        last_error_at=row.last_error_at,
        watermark=row.watermark,
        last_counts=row.last_counts or {},
        schedule_s=config.get("schedule_s"),
    )


@routes.get(
    "/api/v1/connectors",
    access=ADMIN,
    response=ConnectorList,
    summary="Every connector: kind, member, circuit state, last success and error, watermark, last sync counts",
)
async def list_connectors(request: web.Request) -> ConnectorList:
    async with services(request).db.reader() as s:
        rows = await service.listing(s)
    return ConnectorList(items=[health_of(r) for r in rows])


@routes.post(
    "/api/v1/connectors/{name}/syncs",
    access=ADMIN,
    response=SyncAccepted,
    status=202,
    summary="Start a connector's sync now, as a job",
    errors=(404, 422),
)
async def start_sync(request: web.Request) -> SyncAccepted:
    svc = services(request)
    name = request.match_info["name"]
    async with svc.db.reader() as s:
        row = await s.get(Connector, name)
    if row is None:
        raise ConnectorNotFound(f"no connector {name}")
    kind = service.kinds(svc).get(row.kind)
    if kind is None or kind.sync is None:
        raise InvalidConnector(f"connector {name}'s kind {row.kind} has no sync")
    actor = principal(request).actor
    async with svc.db.uow() as uow:
        job = await jobs.enqueue(uow, kind.job_kind, {"name": name, "actor": actor}, created_by=actor)
        await uow.commit()
    return SyncAccepted(job_id=job.id, state=job.state)
