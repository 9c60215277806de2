"""The resident's inbox over HTTP: read the notices every member system sent, mark them read."""

from __future__ import annotations

import datetime as dt

from aiohttp import web
from pydantic import Field

from federation.app import principal, services
from federation.inbox import service
from federation.web.routing import RESIDENT, Routes
from federation.web.schema import Input, Output

routes = Routes("inbox")


class InboxQuery(Input):
    unread: bool = Field(default=False, description="only messages not read yet")
    limit: int = Field(default=50, ge=1, le=200)
    offset: int = Field(default=0, ge=0, le=1_000_000)


class MessageOut(Output):
    id: str
    kind: str
    title_zh: str
    title_en: str
    body_zh: str
    body_en: str
    link: str | None
    created_at: dt.datetime
    read_at: dt.datetime | None


class MessageList(Output):
    items: list[MessageOut]
    total: int
    unread: int


@routes.get(
    "/api/v1/me/inbox",
    access=RESIDENT,
    query=InboxQuery,
    response=MessageList,
    summary="My notices from every member (due dates, requests ready, ...), newest first",
)
async def my_inbox(request: web.Request, query: InboxQuery) -> MessageList:
    svc, who = services(request), principal(request)
    if not who.person_id:
        return MessageList(items=[], total=0, unread=0)
    async with svc.db.reader() as s:
        rows, total, unread = await service.messages(
            s, who.person_id, unread=query.unread, limit=query.limit, offset=query.offset
        )
    return MessageList(items=[MessageOut.model_validate(r) for r in rows], total=total, unread=unread)


@routes.post(
    "/api/v1/me/inbox/{message_id}/read",
    access=RESIDENT,
    response=MessageOut,
    summary="Mark one of my notices read",
    errors=(404,),
)
async def read_message(request: web.Request) -> MessageOut:
    svc, who = services(request), principal(request)
    async with svc.db.uow() as uow:
        row = await service.mark_read(uow.session, who.person_id or "", request.match_info["message_id"])
        await uow.commit()
    return MessageOut.model_validate(row)
