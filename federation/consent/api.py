"""Residents grant and revoke consents; member staff and systems ask whether one is in force."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from aiohttp import web
from pydantic import AwareDatetime, Field

from federation.app import principal, services
from federation.audit.service import Record
from federation.consent import service
from federation.consent.service import Purpose
from federation.web.routing import RESIDENT, Routes, scopes, staff
from federation.web.schema import Input, Output

routes = Routes("consent")


MemberCode = Annotated[str, Field(min_length=1, max_length=32)]


class ConsentIn(Input):
    purpose: Purpose
    members: list[MemberCode] | None = Field(
        default=None, max_length=400, description="member codes; omit to grant to every member"
    )
    expires_at: AwareDatetime | None = None


class ConsentOut(Output):
    id: str
    purpose: str
    all_members: bool
    members: list[str]
    granted_at: dt.datetime
    expires_at: dt.datetime | None
    revoked_at: dt.datetime | None


class ConsentList(Output):
    items: list[ConsentOut]


class CheckIn(Input):
    # as long as a person id can be (the audit trail records it)
    person_id: str = Field(min_length=1, max_length=32)
    purpose: Purpose
    institution: str | None = Field(
        default=None, max_length=32, description="the member asking; defaults to the caller's own"
    )


class CheckOut(Output):
    granted: bool
    consent_id: str | None = None
    expires_at: dt.datetime | None = None


@routes.get("/api/v1/me/consents", access=RESIDENT, response=ConsentList, summary="My consents")
async def my_consents(request: web.Request) -> ConsentList:
    who = principal(request)
    async with services(request).db.reader() as s:
        return ConsentList(items=[ConsentOut.model_validate(c) for c in await service.list_for(s, who.person_id or "")])


@routes.post(
    "/api/v1/me/consents",
    access=RESIDENT,
    body=ConsentIn,
    response=ConsentOut,
    status=201,
    summary="Grant a consent: a purpose, to all members or named ones, until an expiry",
)
async def grant(request: web.Request, body: ConsentIn) -> ConsentOut:
    svc = services(request)
    who = principal(request)
    async with svc.db.uow() as uow:
        consent = await service.grant(
            uow,
            svc,
            who.person_id or "",
            body.purpose,
            members=body.members,
            expires_at=body.expires_at,
            actor=who.actor,
        )
        await uow.commit()
    return ConsentOut.model_validate(consent)


@routes.delete(
    "/api/v1/me/consents/{consent_id}",
    access=RESIDENT,
    response=ConsentOut,
    summary="Revoke a consent; it stops at once",
    errors=(404,),
)
async def revoke(request: web.Request) -> ConsentOut:
    svc = services(request)
    who = principal(request)
    async with svc.db.uow() as uow:
        consent = await service.revoke(uow, svc, who.person_id or "", request.match_info["consent_id"], actor=who.actor)
        await uow.commit()
    return ConsentOut.model_validate(consent)


@routes.post(
    "/api/v1/consents/checks",
    access=staff("librarian", "doctor", "admin") | scopes("consent.check"),
    body=CheckIn,
    response=CheckOut,
    summary="Does this member hold the person's consent for a purpose now?",
)
async def check(request: web.Request, body: CheckIn) -> CheckOut:
    svc = services(request)
    who = principal(request)
    institution = body.institution if (body.institution and who.is_admin) else who.institution
    async with svc.db.uow() as uow:
        consent = await service.holding(uow.session, body.person_id, body.purpose, institution or "")
        await svc.audit(
            uow,
            Record(
                action="consent.check",
                actor=who.actor,
                actor_institution=who.institution,
                subject_person_id=body.person_id,
                purpose=body.purpose.value,
                outcome="granted" if consent else "none",
            ),
        )
        await uow.commit()
    if consent is None:
        return CheckOut(granted=False)
    return CheckOut(granted=True, consent_id=consent.id, expires_at=consent.expires_at)
