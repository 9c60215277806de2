"""Requests (holds): a reader asks for a work (or one copy) to pick up at a service point of any member library.

Placing a request targets a copy at once when one is available: at the pickup library first, then in the same
city, then in the other city, skipping copies whose owner does not lend to other libraries
(``circ_library_policies.lends_to_other_libraries``). A targeted copy is on its library's pull list; pulling it is
checking it in at its own desk, and the check-in's ``HoldRouter`` (``Router`` here) sends it to the hold shelf
here or in transit to the pickup point. With no copy available the request waits (queued) and the next check-in or
receipt of a copy of the work routes that copy to it. Receipt at the pickup point puts the copy on the hold shelf
(request ready, kept ``hold_shelf_days``); checkout to the reader fills it. Cancellation and expiry release the copy
to the next request or back to circulation (home by transit when it is away).

The commands here wrap ``service``'s checkout, check-in, receipt and renewal with the requests' part, in the same
unit of work; like them they never commit.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from federation.db import UnitOfWork, new_id, utcnow
from federation.errors import DomainError
from federation.identity.models import Person
from federation.members.models import Institution
from federation.services import Services
from library.catalog.models import ItemRow, Work
from library.circulation import errors, policies, service, standing, states
from library.circulation.models import ItemState, Loan, Request, Transit

log = logging.getLogger(__name__)

HOLD_SHELF_DAYS = 7
SYSTEM = service.Staff(actor="system:circulation", library=None)


@dataclasses.dataclass(frozen=True)
class Place:
    pickup_service_point: str
    work_id: str | None = None
    item_barcode: str | None = None
    item_library: str | None = None
    credential: service.Credential | None = None  # staff name the reader; a resident asks for themself


# --- policy -----------------------------------------------------------------------------------------------------


async def lends_out(session: AsyncSession, library: str) -> bool:
    """Whether ``library``'s copies may fill requests picked up at another library (default: yes)."""
    return (await policies.library_settings(session, library)).lends_to_other_libraries


async def hold_shelf_days(session: AsyncSession, library: str) -> int:
    return (await policies.library_settings(session, library)).hold_shelf_days or HOLD_SHELF_DAYS


# --- routing ----------------------------------------------------------------------------------------------------


async def _fresh(session: AsyncSession, item_id: str) -> ItemState:
    q = select(ItemState).where(ItemState.item_id == item_id).execution_options(populate_existing=True)
    return (await session.execute(q)).scalar_one()


async def next_request(session: AsyncSession, item: ItemState | service.Copy) -> Request | None:
    """The request this copy should go to: the one it is bound to, else the oldest waiting one it may fill."""
    bound = (
        select(Request)
        .where(Request.item_id == item.item_id, Request.state.in_((states.TARGETED, states.IN_TRANSIT)))
        .order_by(Request.created_at, Request.id)
        .limit(1)
        .execution_options(populate_existing=True)
    )
    found = (await session.execute(bound)).scalar_one_or_none()
    if found is not None:
        return found
    waiting = (
        select(Request)
        .where(
            Request.state == states.QUEUED,
            or_(
                and_(Request.work_id == item.work_id, Request.requested_item_id.is_(None)),
                Request.requested_item_id == item.item_id,
            ),
        )
        .order_by(Request.created_at, Request.id)
        .limit(1)
        .execution_options(populate_existing=True)
    )
    if not await lends_out(session, item.library):
        waiting = waiting.where(Request.pickup_library == item.library)
    return (await session.execute(waiting)).scalar_one_or_none()


class Router:
    """The check-in's and receipt's ``HoldRouter``: answers (pickup service point, reader) and remembers the
    request it chose, which the caller moves on once the copy moved."""

    def __init__(self) -> None:
        self.request: Request | None = None

    async def __call__(self, session: AsyncSession, item: ItemState | service.Copy) -> tuple[str, str] | None:
        self.request = await next_request(session, item)
        if self.request is None:
            return None
        return self.request.pickup_service_point, self.request.reader_id


async def held_for(session: AsyncSession, item: ItemState | service.Copy) -> str | None:
    """The reader (at the pickup library) the copy on the hold shelf is kept for."""
    q = select(Request.reader_id).where(Request.item_id == item.item_id, Request.state == states.READY)
    return (await session.execute(q.limit(1))).scalar_one_or_none()


# --- persisting transitions -------------------------------------------------------------------------------------


async def _change(
    uow: UnitOfWork, req: Request, trigger: str, now: dt.datetime, facts: states.Facts | None = None, **values: Any
) -> states.Transition:
    """Fire a request transition and persist it with one conditional UPDATE."""
    t = states.fire("request", req.id, req.state, trigger, facts or states.Facts(), at=now)
    res = await uow.session.execute(
        update(Request)
        .where(Request.id == req.id, Request.state == t.source)
        .values(state=t.destination, version=Request.version + 1, **values)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:
        raise errors.RequestClosed("the request changed a moment ago", state="changed")
    service._emit(uow, t)
    await uow.session.refresh(req)
    return t


async def _ready(uow: UnitOfWork, req: Request, item: ItemState, now: dt.datetime) -> None:
    """The copy is on the hold shelf at the pickup point: the request is ready until the policy's expiry."""
    until = now + dt.timedelta(days=await hold_shelf_days(uow.session, req.pickup_library))
    await _change(uow, req, "shelve", now, item_id=item.item_id, ready_at=now, hold_until=until)
    uow.emit(
        "circulation.request_ready",
        request_id=req.id,
        person_id=req.person_id,
        item_id=item.item_id,
        work_id=req.work_id,
        pickup_service_point=req.pickup_service_point,
        hold_until=until.isoformat(),
    )


async def _send(
    uow: UnitOfWork, item: ItemState, to_service_point: str, reason: str, now: dt.datetime, trigger: str
) -> Transit:
    """Start a transit of a copy from where it is now (an available copy or one leaving the hold shelf)."""
    s = uow.session
    dest = await service.desk(s, to_service_point)
    from_sp = item.current_service_point or await service.main_service_point(s, item.current_library or item.library)
    t = states.fire("item", item.item_id, item.status, trigger, states.Facts(), at=now)
    await service._move_item(uow, item, t, library=item.current_library, service_point=from_sp)
    transit = Transit(
        item_id=item.item_id,
        barcode=item.barcode,
        loan_id=None,
        reason=reason,
        from_library=item.current_library or item.library,
        from_service_point=from_sp,
        to_library=dest.library,
        to_service_point=dest.code,
        state=states.IN_TRANSIT,
        created_at=now,
    )
    s.add(transit)
    await s.flush()
    uow.emit("circulation.transit_started", transit_id=transit.id, item_id=item.item_id, to_service_point=dest.code)
    return transit


async def _route(uow: UnitOfWork, req: Request, item: ItemState, now: dt.datetime, trigger: str) -> None:
    """Send a copy that is here to ``req``: on the hold shelf when this is its pickup point, else by transit."""
    if item.current_service_point == req.pickup_service_point:
        if item.status != states.ON_HOLD_SHELF:
            t = states.fire("item", item.item_id, item.status, "checkin_hold", states.Facts(), at=now)
            await service._move_item(
                uow, item, t, library=item.current_library, service_point=item.current_service_point
            )
        await _ready(uow, req, item, now)
        return
    transit = await _send(uow, item, req.pickup_service_point, "hold", now, trigger)
    await _change(uow, req, "ship", now, item_id=item.item_id, transit_id=transit.id)


async def _release(uow: UnitOfWork, item: ItemState, now: dt.datetime) -> None:
    """A copy on the hold shelf whose request closed: to the next request, else back to circulation."""
    s = uow.session
    nxt = await next_request(s, item)
    if nxt is not None:
        await _route(uow, nxt, item, now, "release_transit")
    elif item.current_library == item.library or await policies.floats(s, item.library):
        t = states.fire("item", item.item_id, item.status, "release", states.Facts(), at=now)
        await service._move_item(uow, item, t, library=item.current_library, service_point=item.current_service_point)
    else:
        home = await service.main_service_point(s, item.library)
        await _send(uow, item, home, "return_home", now, "release_transit")


async def _target(uow: UnitOfWork, req: Request, now: dt.datetime) -> ItemState | None:
    """Pick an available copy for a queued request: pickup library, then same city, then the other city."""
    s = uow.session
    q = select(ItemRow).where(ItemRow.status == "available")
    q = (
        q.where(ItemRow.id == req.requested_item_id)
        if req.requested_item_id
        else q.where(ItemRow.work_id == req.work_id)
    )
    rows = list((await s.execute(q)).scalars())
    if not rows:
        return None
    taken = set(
        (
            await s.execute(
                select(Request.item_id).where(
                    Request.item_id.in_([r.id for r in rows]), Request.state.in_(states.OPEN_REQUEST_STATES)
                )
            )
        ).scalars()
    )
    cities = dict((await s.execute(select(Institution.code, Institution.city))).all())
    pickup_city = cities.get(req.pickup_library)
    lends: dict[str, bool] = {}
    candidates: list[tuple[int, str, ItemState]] = []
    for row in rows:
        if row.id in taken:
            continue
        if row.library != req.pickup_library:
            if row.library not in lends:
                lends[row.library] = await lends_out(s, row.library)
            if not lends[row.library]:
                continue
        st = await service.item_state(s, row)
        if st.status != states.AVAILABLE:
            continue
        here = st.current_library
        rank = 0 if here == req.pickup_library else 1 if cities.get(here) == pickup_city else 2
        candidates.append((rank, row.barcode, st))
    if not candidates:
        return None
    chosen = min(candidates, key=lambda c: (c[0], c[1]))[2]
    try:
        async with s.begin_nested():
            await _change(uow, req, "target", now, item_id=chosen.item_id, targeted_at=now)
    except IntegrityError:  # another request took the copy a moment ago: wait for the next one
        await s.refresh(req)
        return None
    uow.emit(
        "circulation.request_targeted",
        request_id=req.id,
        item_id=chosen.item_id,
        library=chosen.current_library,
        pickup_service_point=req.pickup_service_point,
    )
    return chosen


# --- commands ---------------------------------------------------------------------------------------------------


async def place(
    uow: UnitOfWork, svc: Services, cmd: Place, staff: service.Staff, person_id: str | None = None
) -> Request:
    """Queue a request (staff for the reader whose credential is given; a resident for ``person_id``)."""
    s = uow.session
    now = utcnow()
    at = await service.desk(s, cmd.pickup_service_point, staff if person_id is None else None)
    if person_id is None:
        if cmd.credential is None:
            raise errors.CredentialRequired("name the reader by a credential")
        person = await service.recognise(s, svc, cmd.credential)
    else:
        found = await s.get(Person, person_id)
        if found is None:
            raise errors.CredentialRequired("your account belongs to no person")
        person = found
    if cmd.item_barcode:
        item = await service.find_item(s, cmd.item_barcode, at, cmd.item_library)
        work_id, requested, item_type = item.work_id, item.id, item.item_type
    else:
        work = await s.get(Work, cmd.work_id or "")
        if work is None:
            raise errors.WorkNotFound(f"no work {cmd.work_id}")
        work_id, requested, item_type = work.id, None, None
    rdr = await service.reader(s, person, at.library)
    if rdr.blocked:
        raise errors.ReaderBlocked(f"blocked at {at.library}: {rdr.block_reason or 'ask the library'}")
    await standing.refuse_blocked(s, person.id)
    if not (await policies.resolve(s, at.library, rdr.category, item_type)).can_request:
        raise errors.RequestNotAllowed(f"{at.library} does not take requests from {rdr.category} readers")
    open_one = await s.execute(
        select(Request.id).where(
            Request.person_id == person.id,
            Request.work_id == work_id,
            Request.state.in_(states.OPEN_REQUEST_STATES),
        )
    )
    if open_one.first() is not None:
        raise errors.AlreadyRequested("the reader already has an open request for this work")
    in_hand = await s.execute(
        select(Loan.barcode, Loan.owner_library)
        .join(ItemState, ItemState.item_id == Loan.item_id)
        .where(Loan.person_id == person.id, Loan.state == states.ACTIVE, ItemState.work_id == work_id)
        .limit(1)
    )
    loan = in_hand.first()
    if loan is not None:
        raise errors.AlreadyOnLoan(
            f"the reader has a copy of this work on loan: {loan.barcode} of {loan.owner_library}"
        )
    req = Request(
        id=new_id(),
        work_id=work_id,
        requested_item_id=requested,
        item_id=None,
        person_id=person.id,
        reader_id=rdr.id,
        pickup_library=at.library,
        pickup_service_point=at.code,
        state=states.QUEUED,
        created_at=now,
        version=1,
    )
    s.add(req)
    await s.flush()
    uow.emit(
        "circulation.request_placed",
        request_id=req.id,
        work_id=work_id,
        person_id=person.id,
        pickup_service_point=at.code,
    )
    chosen = await _target(uow, req, now)
    await service._audit(
        uow,
        svc,
        "circulation.request_placed",
        staff,
        person.id,
        request=req.id,
        work=work_id,
        item=requested,
        pickup_service_point=at.code,
        targeted=chosen.item_id if chosen else None,
    )
    return req


async def checkout(uow: UnitOfWork, svc: Services, cmd: service.Checkout, staff: service.Staff) -> service.Lent:
    """Checkout; a copy on the hold shelf only to its reader, which fills the request."""
    lent = await service.lend(uow, svc, cmd, staff, holder=held_for)
    loan = lent.loan
    if lent.request_id is None:  # the usual case: the checkout's own query found no request on the copy
        return lent
    s = uow.session
    now = utcnow()
    req = (
        await s.execute(
            select(Request)
            .where(Request.id == lent.request_id, Request.state.in_((states.READY, states.TARGETED)))
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if req is not None and req.state == states.READY:
        await _change(uow, req, "fill", now, loan_id=loan.id, closed_at=now)
        uow.emit("circulation.request_fulfilled", request_id=req.id, person_id=req.person_id, loan_id=loan.id)
        await service._audit(
            uow, svc, "circulation.request_fulfilled", staff, req.person_id, request=req.id, loan=loan.id
        )
    elif req is not None:  # lent at the shelf before it was pulled: the request looks for another copy
        await _change(uow, req, "untarget", now, item_id=None, targeted_at=None)
        await _target(uow, req, now)
    return lent


async def checkin(uow: UnitOfWork, svc: Services, cmd: service.Checkin, staff: service.Staff) -> service.CheckinResult:
    """Check-in, routing the copy to the request it is targeted for or to the oldest one waiting for its work."""
    router = Router()
    result = await service.checkin(uow, svc, cmd, staff, holds=router)
    req = router.request
    if req is not None:
        now = utcnow()
        if result.action == "hold_shelf":
            await _ready(uow, req, result.item, now)
        else:
            assert result.transit is not None
            await _change(uow, req, "ship", now, item_id=result.item.item_id, transit_id=result.transit.id)
    return result


async def receive(
    uow: UnitOfWork, svc: Services, cmd: service.Receipt, staff: service.Staff
) -> tuple[Transit, ItemState]:
    """Receipt: on the hold shelf for the request picked up here; forwarded to a request elsewhere or, when its
    request was cancelled on the way, home."""
    router = Router()
    transit, item = await service.receive(uow, svc, cmd, staff, holds=router)
    s = uow.session
    now = utcnow()
    req = router.request
    if req is not None:
        if item.status == states.ON_HOLD_SHELF:
            await _ready(uow, req, item, now)
        else:
            await _route(uow, req, item, now, "checkin_transit")
        item = await _fresh(s, item.item_id)
    elif item.current_library != item.library and not await policies.floats(s, item.library):
        await _send(uow, item, await service.main_service_point(s, item.library), "return_home", now, "checkin_transit")
        item = await _fresh(s, item.item_id)
    return transit, item


async def renew(uow: UnitOfWork, svc: Services, cmd: service.Renewal, staff: service.Staff) -> Loan:
    """Renewal, refused while another reader's request waits for the work (asked in the renewal's one read)."""
    return await service.renew(uow, svc, cmd, staff, requests_block=True)


async def cancel(
    uow: UnitOfWork, svc: Services, request_id: str, staff: service.Staff, person_id: str | None = None
) -> Request:
    """Cancel at any stage; the copy ends right (stays available, travels on, or leaves the hold shelf)."""
    s = uow.session
    req = await s.get(Request, request_id, populate_existing=True)
    if req is None or (person_id is not None and req.person_id != person_id):
        raise errors.RequestNotFound(f"no request {request_id}")
    now = utcnow()
    before = req.state
    await _change(uow, req, "cancel", now, closed_at=now)
    if before == states.READY and req.item_id:
        await _release(uow, await _fresh(s, req.item_id), now)
    elif before == states.TARGETED and req.item_id:  # the copy stays available: the next request may take it
        item = await _fresh(s, req.item_id)
        nxt = await next_request(s, item)
        if nxt is not None and item.status == states.AVAILABLE:
            await _change(uow, nxt, "target", now, item_id=item.item_id, targeted_at=now)
    uow.emit("circulation.request_cancelled", request_id=req.id, person_id=req.person_id, state=before)
    await service._audit(
        uow, svc, "circulation.request_cancelled", staff, req.person_id, request=req.id, state=before, item=req.item_id
    )
    return req


async def expire_holds(svc: Services, now: dt.datetime | None = None) -> int:
    """Expire ready requests past their hold-shelf date, each in its own transaction; the copy goes on."""
    now = now or utcnow()
    async with svc.db.reader() as s:
        ids = list(
            (
                await s.execute(
                    select(Request.id)
                    .where(Request.state == states.READY, Request.hold_until < now)
                    .order_by(Request.hold_until, Request.id)
                )
            ).scalars()
        )
    expired = 0
    for rid in ids:
        try:
            async with svc.db.uow() as uow:
                req = await uow.session.get(Request, rid, populate_existing=True)
                if req is None or req.state != states.READY:
                    continue
                facts = states.Facts(hold_until=req.hold_until, now=now)
                await _change(uow, req, "expire", now, facts, closed_at=now)
                if req.item_id:
                    await _release(uow, await _fresh(uow.session, req.item_id), now)
                uow.emit("circulation.request_expired", request_id=req.id, person_id=req.person_id, item_id=req.item_id)
                await service._audit(
                    uow, svc, "circulation.request_expired", SYSTEM, req.person_id, request=req.id, item=req.item_id
                )
                await uow.commit()
                expired += 1
        except DomainError as e:  # a desk changed it meanwhile (picked up, cancelled): the others still expire
            log.warning("request %s not expired: %s", rid, e)
    return expired


async def expire_holds_job(svc: Services, ctx: Any) -> dict[str, Any]:
    n = await expire_holds(svc)
    await ctx.progress(n, n)
    return {"expired": n}


def register(svc: Services) -> None:
    svc.job_handler("circulation.expire_holds", expire_holds_job)


# --- reads ------------------------------------------------------------------------------------------------------


async def pull_list(session: AsyncSession, at: service.Desk, limit: int = 500) -> list[tuple[Request, ItemState, str]]:
    """Copies at ``at``'s library targeted for requests, to take from the shelf and check in; oldest first."""
    q = (
        select(Request, ItemState, Work.title)
        .join(ItemState, ItemState.item_id == Request.item_id)
        .outerjoin(Work, Work.id == Request.work_id)
        .where(Request.state == states.TARGETED, ItemState.current_library == at.library)
        .order_by(Request.targeted_at, Request.id)
        .limit(limit)
    )
    return [(r, i, t) for r, i, t in (await session.execute(q)).all()]


async def requests_of(session: AsyncSession, person_id: str) -> list[tuple[Request, str | None]]:
    q = (
        select(Request, Work.title)
        .outerjoin(Work, Work.id == Request.work_id)
        .where(Request.person_id == person_id)
        .order_by(Request.created_at.desc(), Request.id)
    )
    return [(r, t) for r, t in (await session.execute(q)).all()]
