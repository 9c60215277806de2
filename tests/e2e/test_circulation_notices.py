"""Notices: due soon, overdue, transit overdue (a daily scan, idempotent per loan or transit, kind and day) and
request ready, delivered through the outbox to the resident's portal inbox and to the configured senders."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from sqlalchemy import select, update

from federation.db import OutboxMessage, utcnow
from federation.demo import RESIDENTS
from federation.inbox import service as inbox
from federation.inbox.models import InboxMessage
from federation.jobs import outbox
from federation.jobs import service as jobs
from federation.jobs.models import Job
from federation.jobs.runner import SCHEDULE_KEY
from library.circulation import notices
from library.circulation.models import Loan, Transit
from tests.circulation_support import add_copies
from tests.conftest import token_for
from tests.e2e.test_circulation_requests import checkin, checkout, one_work, place, receive, tokens

CQ = RESIDENTS[0]
SC = RESIDENTS[5]


async def set_due(svc, loan_id: str, due: dt.datetime) -> None:
    async with svc.db.uow() as uow:
        await uow.session.execute(update(Loan).where(Loan.id == loan_id).values(due_at=due))
        await uow.commit()


async def topics(svc, topic: str) -> list[dict]:
    async with svc.db.reader() as s:
        q = select(OutboxMessage.payload).where(OutboxMessage.topic == topic).order_by(OutboxMessage.created_at)
        return list((await s.execute(q)).scalars())


async def deliver_all(svc) -> None:
    """Relay until the outbox is empty: the app's own background runner may hold a message a moment."""
    for _ in range(200):
        await outbox.relay(svc)
        if await outbox.pending(svc) == 0:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the outbox did not drain")


async def my_inbox(client, headers, **params):
    resp = await client.get("/api/v1/me/inbox", params=params, headers=headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_due_soon_and_overdue_once_a_day_into_the_inbox(client, demo):
    await add_copies(demo, "CQL", ["CQL-N1"], title="围城")
    lib = await tokens(client)
    loan = await (await checkout(client, lib["CQL"], "CQL-N1", CQ, "CQL-MAIN")).json()
    now = utcnow()

    # not due within 3 days (the default): nothing
    assert await notices.scan(demo, now) == {"due_soon": 0, "overdue": 0, "transit_overdue": 0}
    await set_due(demo, loan["id"], now + dt.timedelta(days=2))
    assert (await notices.scan(demo, now))["due_soon"] == 1
    assert (await notices.scan(demo, now + dt.timedelta(minutes=5)))["due_soon"] == 0  # same day: nothing new
    [event] = await topics(demo, "circulation.due_soon")
    assert event["loan_id"] == loan["id"] and event["kind"] == "due_soon"

    await deliver_all(demo)
    await deliver_all(demo)  # a second relay pass delivers nothing twice
    me = await token_for(client, CQ.id_number)
    box = await my_inbox(client, me)
    assert (box["total"], box["unread"]) == (1, 1)
    [msg] = box["items"]
    assert msg["kind"] == "circulation.due_soon" and msg["title_zh"] == "还书提醒" and msg["title_en"] == "Due soon"
    assert "《围城》" in msg["body_zh"] and "重庆图书馆" in msg["body_zh"] and "'围城'" in msg["body_en"]
    assert msg["link"] == f"/me/loans/{loan['id']}" and msg["read_at"] is None

    # overdue: once per day, again the next day
    await set_due(demo, loan["id"], now - dt.timedelta(days=2))
    assert (await notices.scan(demo, now))["overdue"] == 1
    assert (await notices.scan(demo, now))["overdue"] == 0
    assert (await notices.scan(demo, now + dt.timedelta(days=1)))["overdue"] == 1
    await deliver_all(demo)
    box = await my_inbox(client, me)
    assert [m["kind"] for m in box["items"]].count("circulation.overdue") == 2
    assert box["unread"] == 3

    # reading: mine only, once
    first = box["items"][0]
    read = await client.post(f"/api/v1/me/inbox/{first['id']}/read", headers=me)
    assert read.status == 200 and (await read.json())["read_at"] is not None
    again = await (await client.post(f"/api/v1/me/inbox/{first['id']}/read", headers=me)).json()
    assert again["read_at"] == (await read.json())["read_at"]
    other = await token_for(client, SC.id_number)
    denied = await client.post(f"/api/v1/me/inbox/{first['id']}/read", headers=other)
    assert (denied.status, (await denied.json())["code"]) == (404, "inbox.message_not_found")
    assert (await my_inbox(client, other))["total"] == 0
    unread = await my_inbox(client, me, unread="true")
    assert unread["total"] == 2 and all(m["read_at"] is None for m in unread["items"])
    page = await my_inbox(client, me, limit=1, offset=1)
    assert len(page["items"]) == 1 and page["total"] == 3

    # no ID number or phone number in any message
    async with demo.db.reader() as s:
        texts = [f"{m.title_zh}{m.body_zh}{m.body_en}" for m in (await s.execute(select(InboxMessage))).scalars()]
    assert texts and not any(CQ.id_number in t or CQ.phone in t for t in texts)


async def test_transit_overdue_and_request_ready(client, demo):
    work = await one_work(demo, {"CDL": ["CDL-N1"]}, title="平凡的世界")
    lib = await tokens(client)
    me = await token_for(client, CQ.id_number)
    req = await (await place(client, me, "CQL-MAIN", work_id=work)).json()
    out = await (await checkin(client, lib["CDL"], "CDL-N1", "CDL-MAIN")).json()
    transit_id = out["transit"]["id"]
    async with demo.db.uow() as uow:
        old = utcnow() - dt.timedelta(days=8)
        await uow.session.execute(update(Transit).where(Transit.id == transit_id).values(created_at=old))
        await uow.commit()
    assert (await notices.scan(demo))["transit_overdue"] == 1
    assert (await notices.scan(demo))["transit_overdue"] == 0
    [event] = await topics(demo, "circulation.transit_overdue")
    assert event["request_id"] == req["id"] and event["to_service_point"] == "CQL-MAIN"
    await deliver_all(demo)
    [delayed] = (await my_inbox(client, me))["items"]
    assert delayed["kind"] == "circulation.transit_overdue" and delayed["link"] == f"/me/requests/{req['id']}"

    await receive(client, lib["CQL"], transit_id)
    await deliver_all(demo)
    box = await my_inbox(client, me)
    ready = [m for m in box["items"] if m["kind"] == "circulation.request_ready"]
    assert len(ready) == 1 and "《平凡的世界》" in ready[0]["body_zh"] and ready[0]["title_en"] == "Ready for pickup"

    # a copy going home late concerns the libraries only: no resident is told
    await add_copies(demo, "SCL", ["SCL-N1"], title="活着")
    await checkout(client, lib["SCL"], "SCL-N1", SC, "SCL-MAIN")
    home = await (await checkin(client, lib["CQL"], "SCL-N1", "CQL-MAIN")).json()
    async with demo.db.uow() as uow:
        old = utcnow() - dt.timedelta(days=30)
        await uow.session.execute(update(Transit).where(Transit.id == home["transit"]["id"]).values(created_at=old))
        await uow.commit()
    assert (await notices.scan(demo))["transit_overdue"] == 1
    await deliver_all(demo)
    assert (await my_inbox(client, await token_for(client, SC.id_number)))["total"] == 0


async def test_the_scan_is_a_scheduled_job(demo):
    assert notices.JOB_KIND in demo.job_handlers
    assert demo.extras[SCHEDULE_KEY][notices.JOB_KIND] > 0
    async with demo.db.uow() as uow:
        job = await jobs.enqueue(uow, notices.JOB_KIND, {}, created_by="test")
        await uow.commit()
    assert await jobs.execute(demo, job.id)
    async with demo.db.reader() as s:
        done = await s.get(Job, job.id)
    assert done is not None and done.state == "succeeded", done.error if done else None
    assert done.result == {"due_soon": 0, "overdue": 0, "transit_overdue": 0}


async def test_sms_and_email_adapters_get_the_notice_and_log_no_full_number(client, demo, caplog):
    sms_gateway = inbox.LoggingTransport()
    mail_gateway = inbox.LoggingTransport(inbox.mask_email)

    async def phone(person_id: str) -> str | None:
        return CQ.phone

    async def mail(person_id: str) -> str | None:
        return "zhang.wei@example.cn"

    demo.extras[inbox.SENDERS_KEY] = (
        inbox.InboxOnly(),
        inbox.SmsSender(phone, sms_gateway),
        inbox.EmailSender(mail, mail_gateway),
    )
    await add_copies(demo, "CQL", ["CQL-N2"], title="围城")
    lib = await tokens(client)
    loan = await (await checkout(client, lib["CQL"], "CQL-N2", CQ, "CQL-MAIN")).json()
    await set_due(demo, loan["id"], utcnow() + dt.timedelta(hours=30))
    caplog.set_level(logging.INFO)
    await notices.scan(demo)
    await deliver_all(demo)
    [(to, text)] = sms_gateway.sent
    assert to == CQ.phone and text.startswith("还书提醒：") and "《围城》" in text
    [(address, mail_text)] = mail_gateway.sent
    assert address == "zhang.wei@example.cn" and "Due soon" in mail_text
    assert CQ.phone not in caplog.text and "zhang.wei@" not in caplog.text
    assert inbox.mask_phone(CQ.phone) in caplog.text


async def test_a_failing_gateway_keeps_the_inbox_message(client, demo):
    async def broken(address: str, text: str) -> None:
        raise ConnectionError("gateway down")

    async def phone(person_id: str) -> str | None:
        return CQ.phone

    demo.extras[inbox.SENDERS_KEY] = (inbox.SmsSender(phone, broken),)
    await add_copies(demo, "CQL", ["CQL-N3"], title="围城")
    lib = await tokens(client)
    loan = await (await checkout(client, lib["CQL"], "CQL-N3", CQ, "CQL-MAIN")).json()
    await set_due(demo, loan["id"], utcnow() - dt.timedelta(days=1))
    await notices.scan(demo)
    await deliver_all(demo)
    box = await my_inbox(client, await token_for(client, CQ.id_number))
    assert [m["kind"] for m in box["items"]] == ["circulation.overdue"]
    assert await outbox.pending(demo) == 0
