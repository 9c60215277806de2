"""The audit trail over HTTP: residents read who touched their data; administrators read and verify it all."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web
from pydantic import Field
from sqlalchemy import select

from federation.app import principal, services
from federation.audit import service
from federation.audit.models import AuditEntry
from federation.web.routing import RESIDENT, Routes, staff
from federation.web.schema import Input, Output

routes = Routes("audit")


class EntryOut(Output):
    seq: int
    at: dt.datetime
    actor: str
    actor_institution: str | None
    action: str
    purpose: str | None
    outcome: str
    details: dict[str, Any]


class EntryList(Output):
    items: list[EntryOut]
    next_before: int | None


class PageQuery(Input):
    limit: int = Field(default=50, ge=1, le=500)
    before: int | None = Field(default=None, ge=1, le=2**53, description="only entries older than this sequence number")


class AdminQuery(PageQuery):
    person_id: str | None = Field(default=None, max_length=64)
    action: str | None = Field(default=None, max_length=80)


class HeadOut(Output):
    chain: int
    link: int = Field(description="the chain's length: its last entry's place in it")
    hash: str


class VerificationOut(Output):
    ok: bool
    checked: int
    first_broken_seq: int | None = Field(
        description="the first entry found edited, forged or out of place (for a removed one: the next in its chain)"
    )
    reason: str | None
    chain: int | None = Field(default=None, description="the chain of the broken entry")
    heads: list[HeadOut] = Field(
        default_factory=list,
        description="every chain's last entry, when the trail is intact: kept elsewhere, they show a cut tail",
    )


def _page(rows: list[AuditEntry], limit: int) -> EntryList:
    return EntryList(
        items=[EntryOut.model_validate(r) for r in rows], next_before=rows[-1].seq if len(rows) == limit else None
    )


@routes.get(
    "/api/v1/me/access-log",
    access=RESIDENT,
    query=PageQuery,
    response=EntryList,
    summary="Who read or changed my data, when, and why",
)
async def my_access_log(request: web.Request, query: PageQuery) -> EntryList:
    who = principal(request)
    async with services(request).db.reader() as s:
        rows = await service.entries_about(s, who.person_id or "", limit=query.limit, before=query.before)
    return _page(rows, query.limit)


@routes.get(
    "/api/v1/audit/entries", access=staff("admin"), query=AdminQuery, response=EntryList, summary="Read the audit trail"
)
async def entries(request: web.Request, query: AdminQuery) -> EntryList:
    q = select(AuditEntry)
    if query.person_id:
        q = q.where(AuditEntry.subject_person_id == query.person_id)
    if query.action:
        q = q.where(AuditEntry.action == query.action)
    if query.before:
        q = q.where(AuditEntry.seq < query.before)
    async with services(request).db.reader() as s:
        rows = list((await s.execute(q.order_by(AuditEntry.seq.desc()).limit(query.limit))).scalars())
    return _page(rows, query.limit)


@routes.get(
    "/api/v1/audit/verification",
    access=staff("admin"),
    response=VerificationOut,
    summary="Verify the whole hash chain now",
)
async def verification(request: web.Request) -> VerificationOut:
    svc = services(request)
    async with svc.db.reader() as s:
        result = await service.verify(s, svc.audit_key)
    return VerificationOut(
        ok=result.ok,
        checked=result.checked,
        first_broken_seq=result.first_broken_seq,
        reason=result.reason,
        chain=result.chain,
        heads=[HeadOut(chain=h.chain, link=h.link, hash=h.hash) for h in result.heads],
    )
