"""Notices to readers: due soon, overdue, transit overdue (time-driven) and request ready (raised by the hold shelf).

The time-driven ones come from :func:`scan`, run as the job ``circulation.notices.scan`` (periodically, and by
``twincity circulation notices``). It raises one outbox event per (loan or transit, kind, China calendar day): the
``circ_notices`` row's unique key is taken first, so a second scan the same day raises nothing. The events'
handlers write the resident's portal inbox (idempotent by the same key) and hand the message to the configured
``NoticeSender``s (SMS, e-mail; by default none beyond the inbox). No notice, event or log line carries an ID
number or a phone number: persons are named by id, items by title.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from federation.db import dialect_insert, new_id, utcnow
from federation.inbox import service as inbox
from federation.jobs.runner import SCHEDULE_KEY
from federation.members.models import Institution, ServicePoint
from federation.services import Services
from library.catalog.models import ItemRow, Work
from library.circulation import calendar, policies, states
from library.circulation.models import ItemState, Loan, Notice, Request, Transit

log = logging.getLogger(__name__)

DUE_SOON, OVERDUE, TRANSIT_OVERDUE, REQUEST_READY = "due_soon", "overdue", "transit_overdue", "request_ready"
TOPICS = {k: f"circulation.{k}" for k in (DUE_SOON, OVERDUE, TRANSIT_OVERDUE)}
BATCH = 500
JOB_KIND = "circulation.notices.scan"


# --- the scan ---------------------------------------------------------------------------------------------------


async def _raise(svc: Services, kind: str, rows: Sequence[tuple[str, str | None, dict[str, Any]]], day: dt.date) -> int:
    """Take each (subject, person, payload)'s key for ``day`` and raise its event; returns how many were new."""
    raised = 0
    for start in range(0, len(rows), BATCH):
        async with svc.db.uow() as uow:
            for subject_id, person_id, payload in rows[start : start + BATCH]:
                first = (
                    dialect_insert(uow.session, Notice)
                    .values(
                        id=new_id(), subject_id=subject_id, kind=kind, day=day, person_id=person_id, created_at=utcnow()
                    )
                    .on_conflict_do_nothing(index_elements=["subject_id", "kind", "day"])
                )
                if (await uow.session.execute(first)).rowcount == 1:
                    uow.emit(TOPICS[kind], kind=kind, day=day.isoformat(), person_id=person_id, **payload)
                    raised += 1
            await uow.commit()
    return raised


async def scan(svc: Services, now: dt.datetime | None = None) -> dict[str, int]:
    """Raise today's due-soon, overdue and transit-overdue notices not raised yet; returns the counts."""
    now = now or utcnow()
    day = calendar.local_day(now)
    async with svc.db.reader() as s:
        fed = await policies.federation(s)
        soon_q = select(Loan.id, Loan.person_id, Loan.due_at).where(
            Loan.state == states.ACTIVE,
            Loan.due_at >= now,
            Loan.due_at < now + dt.timedelta(days=fed.due_soon_days),
        )
        soon = [(i, p, {"loan_id": i, "due_at": d.isoformat()}) for i, p, d in (await s.execute(soon_q)).all()]
        late_q = select(Loan.id, Loan.person_id, Loan.due_at).where(Loan.state == states.ACTIVE, Loan.due_at < now)
        late = [
            (i, p, {"loan_id": i, "due_at": d.isoformat(), "days_late": (now - d).days})
            for i, p, d in (await s.execute(late_q)).all()
        ]
        stuck_q = (
            select(Transit.id, Transit.to_service_point, Transit.created_at, Request.person_id, Request.id)
            .outerjoin(Request, (Request.transit_id == Transit.id) & (Request.state == states.IN_TRANSIT))
            .where(
                Transit.state == states.IN_TRANSIT,
                Transit.created_at < now - dt.timedelta(days=fed.transit_overdue_days),
            )
        )
        stuck = [
            (t, p, {"transit_id": t, "to_service_point": to, "started_at": at.isoformat(), "request_id": r})
            for t, to, at, p, r in (await s.execute(stuck_q)).all()
        ]
    return {
        DUE_SOON: await _raise(svc, DUE_SOON, soon, day),
        OVERDUE: await _raise(svc, OVERDUE, late, day),
        TRANSIT_OVERDUE: await _raise(svc, TRANSIT_OVERDUE, stuck, day),
    }


async def scan_job(svc: Services, ctx: Any) -> dict[str, Any]:
    counts = await scan(svc)
    total = sum(counts.values())
    await ctx.progress(total, total)
    return counts


# --- delivery ---------------------------------------------------------------------------------------------------


def senders(svc: Services) -> Sequence[inbox.NoticeSender]:
    return svc.extras.get(inbox.SENDERS_KEY, (inbox.InboxOnly(),))


async def _about_item(svc: Services, item_id: str | None) -> tuple[str, str]:
    """(title, owner library's name) of a copy, for the text of a notice."""
    async with svc.db.reader() as s:
        row = (
            await s.execute(
                select(Work.title, Institution.name)
                .select_from(ItemState)
                .outerjoin(Work, Work.id == ItemState.work_id)
                .outerjoin(Institution, Institution.code == ItemState.library)
                .where(ItemState.item_id == (item_id or ""))
            )
        ).first()
        if row is None:  # a copy that never circulated has no state row yet: the catalogue's copy names it
            row = (
                await s.execute(
                    select(Work.title, Institution.name)
                    .select_from(ItemRow)
                    .outerjoin(Work, Work.id == ItemRow.work_id)
                    .outerjoin(Institution, Institution.code == ItemRow.library)
                    .where(ItemRow.id == (item_id or ""))
                )
            ).first()
    title, library = (row[0], row[1]) if row is not None else (None, None)
    return title or "—", library or "—"


async def _loan_item(svc: Services, loan_id: str) -> tuple[str | None, str | None]:
    async with svc.db.reader() as s:
        row = (await s.execute(select(Loan.item_id, Loan.library).where(Loan.id == loan_id))).first()
        if row is None:
            return None, None
        name = await s.scalar(select(Institution.name).where(Institution.code == row[1]))
    return row[0], name


def _date(iso: str) -> str:
    return calendar.local_day(dt.datetime.fromisoformat(iso)).isoformat()


async def _loan_notice(
    svc: Services, p: dict[str, Any], topic: str, title: tuple[str, str], body: tuple[str, str]
) -> None:
    """A notice about one loan: ``body`` holds templates filled with the library, the title and the due day."""
    item_id, library = await _loan_item(svc, p["loan_id"])
    book, _ = await _about_item(svc, item_id)
    due = _date(p["due_at"])
    await _deliver(
        svc,
        inbox.Notice(
            person_id=p["person_id"],
            key=f"{TOPICS[topic]}:{p['loan_id']}:{p['day']}",
            kind=TOPICS[topic],
            title_zh=title[0],
            title_en=title[1],
            body_zh=body[0].format(library=library, title=book, due=due),
            body_en=body[1].format(library=library, title=book, due=due),
            link=f"/me/loans/{p['loan_id']}",
        ),
    )


async def on_due_soon(svc: Services, p: dict[str, Any]) -> None:
    await _loan_notice(
        svc,
        p,
        DUE_SOON,
        ("还书提醒", "Due soon"),
        (
            "您在{library}借阅的《{title}》将于{due}到期，请按时归还或续借。",
            "'{title}', borrowed at {library}, is due on {due}: please return or renew it.",
        ),
    )


async def on_overdue(svc: Services, p: dict[str, Any]) -> None:
    await _loan_notice(
        svc,
        p,
        OVERDUE,
        ("逾期提醒", "Overdue"),
        (
            "您在{library}借阅的《{title}》已于{due}到期，请尽快归还（可在任一成员馆还书）。",
            "'{title}', borrowed at {library}, was due on {due}: please return it at any member library.",
        ),
    )


async def on_transit_overdue(svc: Services, p: dict[str, Any]) -> None:
    """A copy travelling to a reader's pickup point for too long: the reader hears it is delayed; a copy going
    home concerns only the libraries (the transits report lists it)."""
    if not p.get("person_id"):
        log.info("transit %s to %s overdue since %s", p["transit_id"], p["to_service_point"], p["started_at"])
        return
    async with svc.db.reader() as s:
        item_id = await s.scalar(select(Transit.item_id).where(Transit.id == p["transit_id"]))
    title, _ = await _about_item(svc, item_id)
    await _deliver(
        svc,
        inbox.Notice(
            person_id=p["person_id"],
            key=f"{TOPICS[TRANSIT_OVERDUE]}:{p['transit_id']}:{p['day']}",
            kind=TOPICS[TRANSIT_OVERDUE],
            title_zh="预约书在途延误",
            title_en="Request delayed in transit",
            body_zh=f"您预约的《{title}》正在运往{p['to_service_point']}，比预期时间长，图书馆正在查找。",
            body_en=f"'{title}' is taking longer than expected to reach {p['to_service_point']}; the libraries "
            "are looking into it.",
            link=f"/me/requests/{p['request_id']}" if p.get("request_id") else None,
        ),
    )


async def on_request_ready(svc: Services, p: dict[str, Any]) -> None:
    title, _ = await _about_item(svc, p.get("item_id"))
    async with svc.db.reader() as s:
        desk = await s.scalar(select(ServicePoint.name).where(ServicePoint.code == p["pickup_service_point"]))
    until = _date(p["hold_until"])
    where = desk or p["pickup_service_point"]
    await _deliver(
        svc,
        inbox.Notice(
            person_id=p["person_id"],
            key=f"circulation.request_ready:{p['request_id']}",
            kind="circulation.request_ready",
            title_zh="预约书已到馆",
            title_en="Ready for pickup",
            body_zh=f"您预约的《{title}》已在{where}预约架上，请于{until}前取书。",
            body_en=f"'{title}' is on the hold shelf at {where}: please pick it up by {until}.",
            link=f"/me/requests/{p['request_id']}",
        ),
    )


async def _deliver(svc: Services, notice: inbox.Notice) -> None:
    await inbox.deliver(svc.db, notice, senders(svc))


SCHEDULE = {JOB_KIND: 3600.0, "circulation.expire_holds": 3600.0}  # seconds between runs in the embedded runner


def register(svc: Services) -> None:
    svc.job_handler(JOB_KIND, scan_job)
    svc.extras.setdefault(SCHEDULE_KEY, {}).update(SCHEDULE)
    svc.on_event(TOPICS[DUE_SOON], on_due_soon)
    svc.on_event(TOPICS[OVERDUE], on_overdue)
    svc.on_event(TOPICS[TRANSIT_OVERDUE], on_transit_overdue)
    svc.on_event("circulation.request_ready", on_request_ready)
