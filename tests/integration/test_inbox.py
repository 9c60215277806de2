"""The portal inbox: a notice is stored once per key and sent once, whatever the outbox retries; reading is the
owner's; no clear ID number is stored even if a sender puts one in a text."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from federation.db import new_id
from federation.identity.models import Person
from federation.inbox import service as inbox
from federation.inbox.models import InboxMessage


class Recorder:
    channel = "test"

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, person_id: str, channel: str, message: inbox.Notice) -> None:
        self.sent.append(message.key)


async def a_person(svc) -> str:
    async with svc.db.uow() as uow:
        p = Person(id=new_id(), name="张伟", name_key="zhangwei")
        uow.session.add(p)
        await uow.commit()
    return p.id


def notice(person_id: str, key: str = "k1", body: str = "正文") -> inbox.Notice:
    return inbox.Notice(person_id, key, "test.kind", "标题", "Title", body, "Body", "/me/x")


async def test_one_message_per_key_even_when_delivered_concurrently(svc):
    pid = await a_person(svc)
    rec = Recorder()
    results = await asyncio.gather(*(inbox.deliver(svc.db, notice(pid), [rec]) for _ in range(5)))
    assert results.count(True) == 1
    assert rec.sent == ["k1"]
    async with svc.db.reader() as s:
        assert await s.scalar(select(func.count()).select_from(InboxMessage)) == 1


async def test_reading_and_paging(svc):
    pid, other = await a_person(svc), await a_person(svc)
    for i in range(3):
        await inbox.deliver(svc.db, notice(pid, f"k{i}"))
    async with svc.db.uow() as uow:
        rows, total, unread = await inbox.messages(uow.session, pid, limit=2)
        assert (len(rows), total, unread) == (2, 3, 3)
        read = await inbox.mark_read(uow.session, pid, rows[0].id)
        assert read.read_at is not None
        try:
            await inbox.mark_read(uow.session, other, rows[1].id)
        except inbox.MessageNotFound:
            pass
        else:
            raise AssertionError("another person's message was marked read")
        await uow.commit()
    async with svc.db.reader() as s:
        rows, total, unread = await inbox.messages(s, pid, unread=True)
        assert (total, unread) == (2, 2)


async def test_no_clear_id_number_is_stored(svc):
    pid = await a_person(svc)
    await inbox.deliver(svc.db, notice(pid, body="证件 11010519491231002X 已登记"))
    async with svc.db.reader() as s:
        body = await s.scalar(select(InboxMessage.body_zh))
    assert body is not None and "11010519491231002X" not in body


def test_masks():
    assert inbox.mask_phone("13800230001") == "138****0001"
    assert inbox.mask_email("zhang.wei@example.cn") == "z***@example.cn"
