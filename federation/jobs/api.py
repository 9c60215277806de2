"""Job progress over HTTP."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from aiohttp import web
from pydantic import Field

from federation.app import principal, services
from federation.errors import Forbidden
from federation.jobs import service
from federation.web.routing import ANY_API_KEY, ANY_STAFF, Routes, staff
from federation.web.schema import Input, Output

routes = Routes("jobs")


class JobOut(Output):
    id: str
    kind: str
    state: str
    progress: int
    total: int | None
    counts: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class NewJob(Input):
    kind: Literal["audit.verify"]
    params: dict[str, Any] = Field(default_factory=dict)


@routes.get(
    "/api/v1/jobs/{job_id}",
    access=ANY_STAFF | ANY_API_KEY,
    response=JobOut,
    summary="A background job's state and progress",
    errors=(404,),
)
async def get_job(request: web.Request) -> JobOut:
    job = await service.get(services(request), request.match_info["job_id"])
    who = principal(request)
    if not who.is_admin and job.created_by != who.actor:
        raise Forbidden("this job was started by someone else")
    return JobOut.model_validate(job)


@routes.post(
    "/api/v1/jobs", access=staff("admin"), body=NewJob, response=JobOut, status=202, summary="Start a maintenance job"
)
async def start_job(request: web.Request, body: NewJob) -> JobOut:
    svc = services(request)
    async with svc.db.uow() as uow:
        job = await service.enqueue(uow, body.kind, body.params, created_by=principal(request).actor)
        await uow.commit()
    return JobOut.model_validate(job)
