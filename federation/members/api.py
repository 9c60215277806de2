"""The member registry over HTTP: anyone may list members; administrators keep it."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from aiohttp import web
from pydantic import Field

from federation.app import principal, services
from federation.audit.service import Record
from federation.members import service
from federation.web.routing import PUBLIC, Routes, staff
from federation.web.schema import Input, Output

routes = Routes("members")

Kind = Literal["library", "hospital", "system", "federation"]
CODE = r"^[A-Za-z0-9_-]{1,32}$"


class ServicePointOut(Output):
    code: str
    name: str
    is_main: bool
    city: str | None


class InstitutionOut(Output):
    code: str
    name: str
    kind: str
    province: str | None
    city: str | None
    level: str | None
    ownership: str | None
    system_kind: str | None
    participation_since: dt.date | None
    active: bool
    service_points: list[ServicePointOut]


class MemberList(Output):
    items: list[InstitutionOut]


class ListQuery(Input):
    kind: Kind | None = None


class NewInstitutionIn(Input):
    code: str = Field(pattern=CODE)
    name: str = Field(min_length=1, max_length=200)
    kind: Kind
    province: Literal["chongqing", "sichuan"] | None = None
    city: str | None = Field(default=None, max_length=50)
    level: str | None = Field(default=None, max_length=20, description="hospital level, e.g. 三级甲等")
    ownership: Literal["public", "private"] | None = None
    system_kind: str | None = Field(default=None, max_length=40)
    participation_since: dt.date | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)


class NewServicePoint(Input):
    code: str = Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")
    name: str = Field(min_length=1, max_length=200)
    is_main: bool = False
    city: str | None = Field(default=None, max_length=50)
    address: str | None = Field(default=None, max_length=300)


@routes.get(
    "/api/v1/members",
    access=PUBLIC,
    query=ListQuery,
    response=MemberList,
    summary="List member institutions and their service points",
)
async def list_members(request: web.Request, query: ListQuery) -> MemberList:
    async with services(request).db.reader() as s:
        items = await service.listing(s, query.kind)
        return MemberList(items=[InstitutionOut.model_validate(i) for i in items])


@routes.get(
    "/api/v1/members/{code}", access=PUBLIC, response=InstitutionOut, summary="One member institution", errors=(404,)
)
async def get_member(request: web.Request) -> InstitutionOut:
    async with services(request).db.reader() as s:
        return InstitutionOut.model_validate(await service.get(s, request.match_info["code"]))


@routes.post(
    "/api/v1/members",
    access=staff("admin"),
    body=NewInstitutionIn,
    response=InstitutionOut,
    status=201,
    summary="Register a member institution",
    errors=(409,),
)
async def create_member(request: web.Request, body: NewInstitutionIn) -> InstitutionOut:
    svc = services(request)
    async with svc.db.uow() as uow:
        inst = await service.create(uow, service.NewInstitution(**body.model_dump()))
        await svc.audit(
            uow,
            Record(
                action="members.create", actor=principal(request).actor, details={"code": inst.code, "kind": inst.kind}
            ),
        )
        await uow.commit()
    async with svc.db.reader() as s:
        return InstitutionOut.model_validate(await service.get(s, inst.code))


@routes.post(
    "/api/v1/members/{code}/service-points",
    access=staff("admin"),
    body=NewServicePoint,
    response=ServicePointOut,
    status=201,
    summary="Add or update a service point of a member",
    errors=(404, 409),
)
async def add_service_point(request: web.Request, body: NewServicePoint) -> ServicePointOut:
    svc = services(request)
    async with svc.db.uow() as uow:
        sp = await service.add_service_point(
            uow,
            request.match_info["code"],
            body.code,
            body.name,
            is_main=body.is_main,
            city=body.city,
            address=body.address,
        )
        await svc.audit(
            uow,
            Record(
                action="members.service_point",
                actor=principal(request).actor,
                details={"member": request.match_info["code"], "code": sp.code},
            ),
        )
        await uow.commit()
        return ServicePointOut.model_validate(sp)
