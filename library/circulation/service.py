"""Circulation's commands: check out, check in anywhere, receive a transit, renew; and the reads the API needs.

Each command is a plain function over a unit of work: it gathers facts, fires the state table (``states``),
persists each change with one conditional UPDATE, writes the audit entry and raises the events in the same
transaction. It never commits: the caller does, so the idempotency record (``api``) commits with the change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from sqlalchemy import Select, and_, bindparam, exists, false, func, insert, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from federation.audit.service import Record
from federation.db import UnitOfWork, insert_in, new_id, utcnow
from federation.direct import Statement
from federation.errors import DomainError
from federation.identity import service as identity
from federation.identity.errors import UnknownCredential
from federation.identity.models import IdentifierType, Person
from federation.members.models import InstitutionKind
from federation.services import Services
from library.catalog.items import STATUSES, BadItemStatus
from library.catalog.models import ItemRow, Work
from library.catalog.tasks import WORKS_CHANGED
from library.circulation import cache, calendar, errors, fines, policies, standing, states
from library.circulation.models import Borrower, ItemState, Loan, Reader, Request, Transit

CREDENTIAL_TYPES = ("social_security_card", "id_number", "library_card")
# circulation's item states in the catalogue's vocabulary (``library.catalog.items.STATUSES``)
CATALOG_STATUS = {states.ON_HOLD_SHELF: "on_hold"}
FROM_CATALOG_STATUS = {"on_hold": states.ON_HOLD_SHELF}


# --- commands and results ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Credential:
    """A card or number presented at the desk. ``library_card`` without ``institution`` is looked up at every
    member library (a card number names one library's card; two matches are refused as ambiguous)."""

    type: str
    value: str
    institution: str = ""


@dataclasses.dataclass(frozen=True)
class Staff:
    actor: str
    library: str | None  # the staff member's institution


@dataclasses.dataclass(frozen=True)
class Checkout:
    item_barcode: str
    credential: Credential
    service_point: str
    item_library: str | None = None  # only when two libraries use the same barcode


@dataclasses.dataclass(frozen=True)
class Checkin:
    item_barcode: str
    service_point: str
    item_library: str | None = None


@dataclasses.dataclass(frozen=True)
class Receipt:
    transit_id: str
    service_point: str | None = None  # default: the transit's destination


@dataclasses.dataclass(frozen=True)
class Renewal:
    loan_id: str
    person_id: str | None = None  # set when a resident renews: only their own loans exist for them


@dataclasses.dataclass(frozen=True)
class Desk:
    code: str
    library: str


@dataclasses.dataclass(frozen=True)
class CheckinResult:
    action: str  # shelve, transit, hold_shelf
    destination: str  # the service point the copy stays at or travels to
    loan: Loan | None
    transit: Transit | None
    item: ItemState
    title: str | None = None  # the work's, for the desk's screen and receipt


# Requests (holds) will route a returned copy to a waiting reader: given the copy, the service point it should go
# to and the reader it is for, or None. Until requests exist nothing waits.
HoldRouter = Callable[[AsyncSession, "ItemState | Copy"], Awaitable[tuple[str, str] | None]]


async def no_holds(session: AsyncSession, item: ItemState | Copy) -> tuple[str, str] | None:
    return None


# The reader a copy on the hold shelf is kept for (requests answer it; nothing is held without them).
Holder = Callable[[AsyncSession, "ItemState | Copy"], Awaitable[str | None]]


async def no_holder(session: AsyncSession, item: ItemState | Copy) -> str | None:
    return None


# --- lookups ----------------------------------------------------------------------------------------------------


async def desk(session: AsyncSession, code: str, staff: Staff | None = None) -> Desk:
    """The service point ``code`` as a circulation desk; refused for another library's desk than the staff's."""
    point = (await cache.snapshot(session)).points.get(code.strip().upper())
    if point is None:
        raise errors.ServicePointNotFound(f"no service point {code}")
    if point.kind != InstitutionKind.LIBRARY:
        raise errors.NotALibrary(f"{point.code} is not a library's service point")
    if staff is not None and staff.library != point.library:
        raise errors.WrongLibrary(
            f"{point.code} belongs to {point.library}; you work for {staff.library or 'no library'}"
        )
    return Desk(point.code, point.library)


async def main_service_point(session: AsyncSession, library: str) -> str:
    code = (await cache.snapshot(session)).main_points.get(library)
    if code is None:
        raise errors.ServicePointNotFound(f"{library} has no service point to send the copy to")
    return code


@dataclasses.dataclass(frozen=True)
class Copy:
    """A copy as a checkout sees it: the catalogue's row, circulation's state of it (None before its first
    circulation), the request bound to it (ready on the hold shelf, or targeted) and its work's title, read in one
    statement."""

    id: str
    library: str
    barcode: str
    work_id: str
    item_type: str | None
    status: str  # the catalogue's
    location: str | None
    state_status: str | None
    current_library: str | None
    request_id: str | None
    title: str | None
    waiting: bool = True  # a request may want this copy (False only when ``find_copy`` was asked and saw none)
    loan: Sequence[Any] | None = None  # its active loan's row, when ``find_copy`` was asked for it and there is one

    @property
    def item_id(self) -> str:
        return self.id


_COPY_WIDTH = len(dataclasses.fields(Copy)) - 2  # the statement's columns before ``waiting`` and ``loan``


@functools.cache
def _copy_statement(waiting: bool, by_library: bool, loan: bool = False) -> Statement:
    return Statement(_copy_query(waiting, by_library, loan))


@functools.cache
def _copy_query(waiting: bool, by_library: bool, loan: bool = False) -> Select[Any]:
    """``find_copy``'s statement, built once per shape with bound parameters (``p_barcode``, ``p_library``);
    ``loan``: the copy's active loan's columns after the others (NULLs when it has none)."""
    bound = (
        select(Request.id)
        .where(Request.item_id == ItemRow.id, Request.state.in_((states.READY, states.TARGETED)))
        .limit(1)
        .scalar_subquery()
    )
    maybe = (
        or_(
            exists().where(Request.item_id == ItemRow.id, Request.state.in_((states.TARGETED, states.IN_TRANSIT))),
            exists().where(Request.work_id == ItemRow.work_id, Request.state == states.QUEUED),
            exists().where(Request.requested_item_id == ItemRow.id, Request.state == states.QUEUED),
        )
        if waiting
        else true()
    )
    q = (
        select(
            ItemRow.id,
            ItemRow.library,
            ItemRow.barcode,
            ItemRow.work_id,
            ItemRow.item_type,
            ItemRow.status,
            ItemRow.location,
            ItemState.status,
            ItemState.current_library,
            bound,
            Work.title,
            maybe,
        )
        .outerjoin(ItemState, ItemState.item_id == ItemRow.id)
        .outerjoin(Work, Work.id == ItemRow.work_id)
        .where(ItemRow.barcode == bindparam("p_barcode"))
    )
    if loan:  # at most one active loan per copy (the loans' partial unique index): still one row per copy
        q = q.add_columns(*_LOANS.c).outerjoin(
            _LOANS, (_LOANS.c.item_id == ItemRow.id) & (_LOANS.c.state == states.ACTIVE)
        )
    if by_library:
        q = q.where(ItemRow.library == bindparam("p_library"))
    return q


async def find_copy(
    session: AsyncSession,
    barcode: str,
    desk: Desk,
    item_library: str | None = None,
    *,
    waiting: bool = False,
    loan: bool = False,
) -> Copy:
    """``find_item`` and the copy's circulation state and bound request, in one statement; with ``waiting``, also
    whether any request could want the copy (bound to it on the way, or queued for it or its work): when none
    could, a check-in need not ask the requests' router; with ``loan``, also its active loan (``Copy.loan``)."""
    params = {"p_barcode": barcode.strip()}
    if item_library:
        params["p_library"] = item_library.strip().upper()
    q = _copy_statement(waiting, bool(item_library), loan)
    n = _COPY_WIDTH
    rows = [
        Copy(*r[:n], waiting=bool(r[n]), loan=r[n + 1 :] if loan and r[n + 1] is not None else None)
        for r in (await q.run(session, params)).rows
    ]
    if not rows:
        raise errors.ItemNotFound(f"no copy with barcode {barcode}")
    if len(rows) == 1:
        return rows[0]
    own = [r for r in rows if r.library == desk.library]
    if len(own) == 1:
        return own[0]
    found = [r for r in rows if r.state_status is not None and r.current_library == desk.library]
    if len(found) == 1:
        return found[0]
    raise errors.AmbiguousBarcode(
        f"{len(rows)} libraries hold a copy with barcode {barcode}: send item_library",
        libraries=sorted(r.library for r in rows),
    )


async def find_item(session: AsyncSession, barcode: str, desk: Desk, item_library: str | None = None) -> ItemRow:
    """The copy with this barcode: the desk library's own first, then one circulating at the desk's library."""
    q = select(ItemRow).where(ItemRow.barcode == barcode.strip())
    if item_library:
        q = q.where(ItemRow.library == item_library.strip().upper())
    rows = list((await session.execute(q)).scalars())
    if not rows:
        raise errors.ItemNotFound(f"no copy with barcode {barcode}")
    if len(rows) == 1:
        return rows[0]
    own = [r for r in rows if r.library == desk.library]
    if len(own) == 1:
        return own[0]
    here = (
        await session.execute(
            select(ItemState.item_id).where(
                ItemState.item_id.in_([r.id for r in rows]), ItemState.current_library == desk.library
            )
        )
    ).scalars()
    ids = set(here)
    found = [r for r in rows if r.id in ids]
    if len(found) == 1:
        return found[0]
    raise errors.AmbiguousBarcode(
        f"{len(rows)} libraries hold a copy with barcode {barcode}: send item_library",
        libraries=sorted(r.library for r in rows),
    )


_STATE_COLUMNS = tuple(ItemState.__table__.c)
_STATE_KEYS = tuple(c.key for c in _STATE_COLUMNS)
_STATE_ROW = Statement(select(*_STATE_COLUMNS).where(ItemState.__table__.c.item_id == bindparam("p_item")))


def _state_of(row: Sequence[Any]) -> ItemState:
    """A row of ``circ_item_state`` as an ``ItemState`` the session does not track: it is read, and changed only by
    the conditional UPDATEs below, never through the object."""
    return ItemState(**dict(zip(_STATE_KEYS, row, strict=True)))


@functools.cache
def _first_state(dialect: str) -> Statement:
    """The first circulation's INSERT of the copy's row, doing nothing when another desk made it a moment ago."""
    return Statement(insert_in(dialect, ItemState.__table__).on_conflict_do_nothing(index_elements=["item_id"]))


async def item_state(session: AsyncSession, item: ItemRow | Copy) -> ItemState:
    """Circulation's row for the copy, made on its first circulation from the catalogue's status and location."""
    params = {"p_item": item.id}
    found = (await _STATE_ROW.run(session, params)).first()
    if found is not None:  # every circulation but the copy's first: one statement
        return _state_of(found)
    first = {
        "item_id": item.id,
        "library": item.library,
        "barcode": item.barcode,
        "work_id": item.work_id,
        "status": FROM_CATALOG_STATUS.get(item.status, item.status),
        "current_library": item.library,
        "current_service_point": item.location,
        "version": 1,
        "updated_at": utcnow(),
    }
    await _first_state(session.get_bind().dialect.name).run(session, first)
    return _state_of((await _STATE_ROW.run(session, params)).one())


def _one_identifier(cred: Credential) -> identity.IdentifierInput | None:
    """The one identifier a credential names; None for a library card without its library (any member's)."""
    if cred.type != "library_card":
        return identity.IdentifierInput(IdentifierType(cred.type), cred.value)
    if cred.institution:
        return identity.IdentifierInput(IdentifierType.LOCAL, cred.value, cred.institution, "library_card")
    return None


async def recognise(session: AsyncSession, svc: Services, cred: Credential) -> identity.Holder:
    """The person a credential belongs to; the identity layer's errors (unknown, lost, cancelled) pass unchanged."""
    inp = _one_identifier(cred)
    if inp is None:
        return await _any_library_card(session, svc, cred.value)
    return await identity.credential_holder(session, svc.cipher, inp)


async def recognise_standing(
    session: AsyncSession, svc: Services, cred: Credential, library: str, now: dt.datetime
) -> tuple[identity.Holder, standing.Standing]:
    """``recognise`` and the person's ``standing.of`` at ``library``: one statement for a credential naming one
    identifier (the checkout's usual case)."""
    inp = _one_identifier(cred)
    if inp is None:
        person = await _any_library_card(session, svc, cred.value)
        return person, await standing.of(session, person.id, library, now)
    return await standing.of_credential(session, svc.cipher, inp, library, now)


async def _any_library_card(session: AsyncSession, svc: Services, value: str) -> identity.Holder:
    libraries = (await cache.snapshot(session)).libraries
    found: list[identity.Holder] = []
    for code in libraries:
        inp = identity.IdentifierInput(IdentifierType.LOCAL, value, code, "library_card")
        try:
            found.append(await identity.credential_holder(session, svc.cipher, inp))  # refuses a lost card
        except UnknownCredential:
            continue
    if not found:
        raise UnknownCredential("no person holds this library_card")
    if len({p.id for p in found}) > 1:
        raise errors.AmbiguousCard("several libraries issued this card number to different people: send institution")
    return found[0]


_READER_COLUMNS = tuple(Reader.__table__.c)
_READER_KEYS = tuple(c.key for c in _READER_COLUMNS)
_READER_ROW = Statement(
    select(*_READER_COLUMNS).where(
        Reader.__table__.c.person_id == bindparam("p_person"), Reader.__table__.c.library == bindparam("p_library")
    )
)


@functools.cache
def _first_reader(dialect: str) -> Statement:
    """A reader record's INSERT, returning the row it made, or nothing when another desk made it a moment ago."""
    first = insert_in(dialect, Reader.__table__).on_conflict_do_nothing(index_elements=["person_id", "library"])
    return Statement(first.returning(*_READER_COLUMNS))


async def reader(
    session: AsyncSession, person: Person | identity.Holder, library: str, *, today: dt.date | None = None
) -> Reader:
    """The person's reader record at ``library``, made on first use (two desks at once still make one): one
    statement, two when another desk made it first. The record is read as a row, an object the session does not
    track: it changes through UPDATEs (``_count``, the administrators' blocks), never through the object."""
    today = today or utcnow().date()
    first = {
        "id": new_id(),
        "person_id": person.id,
        "library": library,
        "category": policies.category_for(person.birth_date, today),
        "blocked": False,
        "block_reason": None,
        "active_loans": 0,
        "created_at": utcnow(),
    }
    row = (await _first_reader(session.get_bind().dialect.name).run(session, first)).first()
    if row is None:
        row = (await _READER_ROW.run(session, {"p_person": person.id, "p_library": library})).one()
    return Reader(**dict(zip(_READER_KEYS, row, strict=True)))


# --- persisting transitions -------------------------------------------------------------------------------------


# The hot path's writes, built once with bound parameters and run by the driver itself (``federation.direct``):
# each execution costs the round trip and little Python besides.
_STATE = ItemState.__table__
_ITEMS = ItemRow.__table__
_READERS = Reader.__table__
_BORROWERS = Borrower.__table__
_MOVE = Statement(
    update(_STATE)
    .where(_STATE.c.item_id == bindparam("p_item"), _STATE.c.status == bindparam("p_source"))
    .values(
        status=bindparam("p_destination"),
        version=_STATE.c.version + 1,
        current_library=bindparam("p_library"),
        current_service_point=bindparam("p_point"),
        updated_at=bindparam("p_at"),
    )
    .returning(*_STATE.c)
)
_FOLLOW = Statement(
    update(_ITEMS)
    .where(_ITEMS.c.id == bindparam("p_item"), _ITEMS.c.status != bindparam("p_status"))
    .values(status=bindparam("p_status"), updated_at=bindparam("p_at"))
)
_READER_UPDATE = (
    update(_READERS)
    .where(_READERS.c.id == bindparam("p_reader"))
    .values(active_loans=_READERS.c.active_loans + bindparam("p_delta"))
)
_READER_COUNT = Statement(_READER_UPDATE)
_READER_COUNT_CAPPED = Statement(_READER_UPDATE.where(_READERS.c.active_loans < bindparam("p_max")))
_BORROWER_UPDATE = (
    update(_BORROWERS)
    .where(_BORROWERS.c.person_id == bindparam("p_person"))
    .values(active_loans=_BORROWERS.c.active_loans + bindparam("p_delta"))
)
_BORROWER_COUNT = Statement(_BORROWER_UPDATE)
_BORROWER_COUNT_CAPPED = Statement(_BORROWER_UPDATE.where(_BORROWERS.c.active_loans < bindparam("p_max")))
_LOANS = Loan.__table__
_LOAN_INSERT = Statement(insert(_LOANS))
_LOAN_KEYS = tuple(c.key for c in _LOANS.c)


def _loan_return(source: str, destination: str) -> Any:
    """The loan's conditional UPDATE at check-in, with its states bound as ``source`` and ``destination``."""
    return (
        update(_LOANS)
        .where(_LOANS.c.id == bindparam("p_loan"), _LOANS.c.state == bindparam(source))
        .values(
            state=bindparam(destination),
            returned_at=bindparam("p_at"),
            checkin_service_point=bindparam("p_point"),
            version=_LOANS.c.version + 1,
        )
    )


_RETURN = Statement(_loan_return("p_source", "p_destination"))


def _move_params(item_id: str, t: states.Transition, library: str | None, point: str | None) -> dict[str, Any]:
    """``_MOVE``'s parameters for an item transition."""
    return {
        "p_item": item_id,
        "p_source": t.source,
        "p_destination": t.destination,
        "p_library": library,
        "p_point": point,
        "p_at": t.at,
    }


async def _move_item(
    uow: UnitOfWork, state: ItemState | Copy, t: states.Transition, *, library: str | None, service_point: str | None
) -> ItemState:
    """Persist an item transition with one conditional UPDATE; a concurrent change makes it refuse, not double.
    Returns the copy's circulation row as the UPDATE left it."""
    moved = (await _MOVE.run(uow.session, _move_params(state.item_id, t, library, service_point))).rows
    if len(moved) != 1:
        raise _copy_changed(t.trigger)
    await _catalogue_follows(uow, state.item_id, state.work_id, _catalog_status(t.destination))
    _emit(uow, t)
    return _state_of(moved[0])


# The refusals of the writes, worded once for the separate statements and the folded ones.
_ALREADY_LENT = "the copy is already on loan"
_LOAN_CLOSED = "the loan was closed a moment ago"


def _copy_changed(trigger: str) -> DomainError:
    """Another desk moved the copy between its read and this write: at a checkout the copy is unavailable, any
    other transition is refused."""
    refusal = errors.ItemUnavailable if trigger == "checkout" else errors.TransitionRefused
    return refusal("another desk changed this copy a moment ago", state="changed")


def _over_limit(scope: str, limit: int | None) -> errors.LimitReached:
    where = "at this library" if scope == "library" else "across the federation"
    return errors.LimitReached(f"{limit} loans {where} already", scope=scope)


def _catalog_status(destination: str) -> str:
    """Circulation's item state in the catalogue's vocabulary."""
    status = CATALOG_STATUS.get(destination, destination)
    if status not in STATUSES:
        raise BadItemStatus(f"unknown item status {status!r}; known: {', '.join(sorted(STATUSES))}")
    return status


async def _catalogue_follows(uow: UnitOfWork, item_id: str, work_id: str, status: str) -> None:
    """The catalogue's copy takes circulation's status, with a ``catalog.works_changed`` event so the search index
    does too (``library.catalog.items.set_item_status`` in one statement: circulation's conditional UPDATE has
    already serialised the changes of this copy)."""
    res = await _FOLLOW.run(uow.session, {"p_item": item_id, "p_status": status, "p_at": utcnow()})
    if res.rowcount:
        uow.emit(WORKS_CHANGED, work_ids=[work_id])


def _loan_of(row: Sequence[Any]) -> Loan:
    """A row of ``circ_loans`` as a ``Loan`` the session does not track: changed only by conditional UPDATEs."""
    return Loan(**dict(zip(_LOAN_KEYS, row, strict=True)))


def _committed(row: Any, **values: Any) -> None:
    """Give a loaded row the values an UPDATE just wrote, as loaded ones (not changes to flush): no re-read."""
    for key, value in values.items():
        set_committed_value(row, key, value)


def _emit(uow: UnitOfWork, t: states.Transition) -> None:
    for ev in t.events:
        uow.emit(ev.topic, **ev.payload)


async def _count(
    uow: UnitOfWork,
    reader_id: str,
    person_id: str,
    delta: int,
    policy: policies.Policy | None,
    *,
    has_borrower: bool = False,
) -> None:
    """Move the reader's and the person's loan counters together; with a policy, refuse beyond its limits.
    ``has_borrower``: the person's federation-wide row is known to exist (no insert needed)."""
    s = uow.session
    capped = policy is not None and policy.max_loans is not None
    params: dict[str, Any] = {"p_reader": reader_id, "p_delta": delta}
    if capped:
        assert policy is not None
        params["p_max"] = policy.max_loans
    res = await (_READER_COUNT_CAPPED if capped else _READER_COUNT).run(s, params)
    if res.rowcount != 1:
        raise _over_limit("library", policy.max_loans if policy else 0)
    params = {"p_person": person_id, "p_delta": delta}
    if delta < 0:
        # a loan ends: its checkout made the person's row, so the UPDATE alone is the usual case; a row missing (a
        # loan older than the federation-wide counter) is made at zero rather than counted below it
        if (await _BORROWER_COUNT.run(s, params)).rowcount != 1:
            await _make_borrower(s, person_id)
        return
    if not has_borrower:
        await _make_borrower(s, person_id)
    if policy is not None:
        params["p_max"] = policy.max_total_loans
    res = await (_BORROWER_COUNT_CAPPED if policy is not None else _BORROWER_COUNT).run(s, params)
    if res.rowcount != 1:
        raise _over_limit("federation", policy.max_total_loans if policy else 0)


@functools.cache
def _first_borrower(dialect: str) -> Statement:
    return Statement(insert_in(dialect, _BORROWERS).on_conflict_do_nothing(index_elements=["person_id"]))


async def _make_borrower(s: AsyncSession, person_id: str) -> None:
    """The person's federation-wide counter row, at zero, unless it exists."""
    params = {"person_id": person_id, "active_loans": 0, "blocked": False, "block_reason": None}
    await _first_borrower(s.get_bind().dialect.name).run(s, params)


async def _audit(
    uow: UnitOfWork, svc: Services, what: str, staff: Staff, person_id: str | None, **details: Any
) -> None:
    await svc.audit(
        uow,
        Record(
            action=what,
            actor=staff.actor,
            actor_institution=staff.library,
            subject_person_id=person_id,
            details=details,
        ),
    )


def _moved_and_followed() -> tuple[Any, Any, Any]:
    """The first two CTEs of a folded write: the copy's conditional UPDATE (``_MOVE``), whether it moved, and the
    catalogue's status (``_FOLLOW``), written only when it did."""
    moved = _MOVE.statement.cte("moved")
    did_move = select(moved.c.item_id).exists()
    return moved, did_move, _FOLLOW.statement.where(did_move).returning(_ITEMS.c.id).cte("followed")


@functools.cache
def _lend_at_once(capped: bool) -> Statement:
    """PostgreSQL: checkout's five writes as one statement, data-modifying CTEs each done only when the copy moved
    (``_MOVE``, ``_FOLLOW``, the two counters, the loan, as below). It answers how many rows each one wrote, so a
    refusal is told by the first write that refused, as the separate statements tell it."""
    moved, did_move, followed = _moved_and_followed()
    reader_row = _READER_UPDATE.where(did_move)
    if capped:
        reader_row = reader_row.where(_READERS.c.active_loans < bindparam("p_max"))
    counted = reader_row.returning(_READERS.c.id).cte("counted")
    borrowed = (
        _BORROWER_UPDATE.where(_BORROWERS.c.active_loans < bindparam("p_total_max"), did_move)
        .returning(_BORROWERS.c.person_id)
        .cte("borrowed")
    )
    values = select(*(bindparam(f"v_{c.key}", type_=c.type) for c in _LOANS.c)).where(
        did_move, select(counted.c.id).exists(), select(borrowed.c.person_id).exists()
    )
    lent = insert(_LOANS).from_select([c.key for c in _LOANS.c], values).returning(_LOANS.c.id).cte("lent")
    return Statement(
        select(
            *(select(func.count()).select_from(w).scalar_subquery() for w in (moved, followed, counted, borrowed, lent))
        )
    )


async def _lend_writes(
    uow: UnitOfWork,
    item: Copy,
    t: states.Transition,
    at: Desk,
    loan: Loan,
    policy: policies.Policy,
    *,
    has_borrower: bool,
) -> None:
    """Checkout's writes: the copy moves (conditional UPDATE), the catalogue follows, the reader's and the person's
    counters move within the policy's limits, the loan is inserted. One statement on PostgreSQL, one each
    elsewhere; a refusal raises and the unit of work rolls back whatever was written."""
    s = uow.session
    columns = {c.key: getattr(loan, c.key) for c in _LOANS.c}
    if s.get_bind().dialect.name != "postgresql":
        await _move_item(uow, item, t, library=at.library, service_point=at.code)
        await _count(uow, loan.reader_id, loan.person_id, +1, policy, has_borrower=has_borrower)
        try:
            await _LOAN_INSERT.run(s, columns)
        except IntegrityError:
            # the partial unique index: another active loan of this copy exists (the unit of work rolls back)
            raise errors.ItemUnavailable(_ALREADY_LENT) from None
        return
    status = _catalog_status(t.destination)
    if not has_borrower:
        await _make_borrower(s, loan.person_id)
    capped = policy.max_loans is not None
    params: dict[str, Any] = {
        **_move_params(item.id, t, at.library, at.code),
        "p_status": status,
        "p_reader": loan.reader_id,
        "p_person": loan.person_id,
        "p_delta": 1,
        "p_total_max": policy.max_total_loans,
        **{f"v_{k}": v for k, v in columns.items()},
    }
    if capped:
        params["p_max"] = policy.max_loans
    try:
        moved, followed, counted, borrowed, lent = (await _lend_at_once(capped).run(s, params)).one()
    except IntegrityError:
        raise errors.ItemUnavailable(_ALREADY_LENT) from None
    if moved != 1:
        raise _copy_changed(t.trigger)
    if counted != 1:
        raise _over_limit("library", policy.max_loans)
    if borrowed != 1:
        raise _over_limit("federation", policy.max_total_loans)
    assert lent == 1
    if followed:
        uow.emit(WORKS_CHANGED, work_ids=[item.work_id])
    _emit(uow, t)


@functools.cache
def _return_at_once(with_loan: bool) -> Statement:
    """PostgreSQL: check-in's writes as one statement, data-modifying CTEs each done only when the copy moved: the
    copy's conditional UPDATE (``_MOVE``), the catalogue's status and, with a loan, the loan's conditional UPDATE
    (``_RETURN``) and the two counters down by one. One row, the copy's as the move left it and how many rows each
    other write touched; no row when the copy did not move."""
    moved, did_move, followed = _moved_and_followed()
    writes = [followed]
    if with_loan:
        writes += [
            _loan_return("p_loan_source", "p_loan_destination").where(did_move).returning(_LOANS.c.id).cte("returned"),
            _READER_UPDATE.where(did_move).returning(_READERS.c.id).cte("counted"),
            _BORROWER_UPDATE.where(did_move).returning(_BORROWERS.c.person_id).cte("borrowed"),
        ]
    counts = (select(func.count()).select_from(w).scalar_subquery() for w in writes)
    return Statement(select(*moved.c, *counts).select_from(moved))


async def _return_writes(
    uow: UnitOfWork, item: Copy, t: states.Transition, at: Desk, loan: Loan | None, lt: states.Transition | None
) -> ItemState:
    """Check-in's writes: the copy moves (conditional UPDATE), the catalogue follows and, with a loan, the loan ends
    (conditional UPDATE) and the reader's and the person's counters go down. One statement on PostgreSQL, one each
    elsewhere; a refusal raises and the unit of work rolls back whatever was written. Returns the copy's row as the
    move left it."""
    s = uow.session
    if s.get_bind().dialect.name != "postgresql":
        fresh = await _move_item(uow, item, t, library=at.library, service_point=at.code)
        if loan is not None:
            assert lt is not None
            params = {"p_loan": loan.id, "p_source": lt.source, "p_destination": lt.destination, "p_at": lt.at}
            if (await _RETURN.run(s, {**params, "p_point": at.code})).rowcount != 1:
                raise errors.LoanNotActive(_LOAN_CLOSED)
            await _count(uow, loan.reader_id, loan.person_id, -1, None)
            _emit(uow, lt)
        return fresh
    params = {**_move_params(item.id, t, at.library, at.code), "p_status": _catalog_status(t.destination)}
    if loan is not None:
        assert lt is not None and lt.at == t.at
        params |= {"p_loan": loan.id, "p_loan_source": lt.source, "p_loan_destination": lt.destination}
        params |= {"p_reader": loan.reader_id, "p_person": loan.person_id, "p_delta": -1}
    rows = (await _return_at_once(loan is not None).run(s, params)).rows
    if len(rows) != 1:
        raise _copy_changed(t.trigger)
    state, counts = rows[0][: len(_STATE_COLUMNS)], rows[0][len(_STATE_COLUMNS) :]
    if loan is not None:
        assert lt is not None
        returned, counted, borrowed = counts[1:]
        if returned != 1:
            raise errors.LoanNotActive(_LOAN_CLOSED)
        if counted != 1:
            raise _over_limit("library", 0)
        if borrowed != 1:  # a loan older than the federation-wide counter: its row is made at zero, as ``_count`` does
            await _make_borrower(s, loan.person_id)
    if counts[0]:
        uow.emit(WORKS_CHANGED, work_ids=[item.work_id])
    _emit(uow, t)
    if lt is not None:
        _emit(uow, lt)
    return _state_of(state)


# --- commands ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Lent:
    loan: Loan
    request_id: str | None  # the request bound to the copy when it was lent (ready or targeted), if any
    title: str | None = None  # the work's


async def checkout(uow: UnitOfWork, svc: Services, cmd: Checkout, staff: Staff, holder: Holder = no_holder) -> Loan:
    """Lend a copy at a desk to the person whose credential is presented."""
    return (await lend(uow, svc, cmd, staff, holder)).loan


async def lend(uow: UnitOfWork, svc: Services, cmd: Checkout, staff: Staff, holder: Holder = no_holder) -> Lent:
    """``checkout``, telling also which request was bound to the copy (``requests.checkout`` fills or moves it).

    The statements are few and their number does not depend on the reader's loans: the desk, the rules and the
    calendar come from this process's copy (``cache``); the copy, its state and its bound request are one
    statement, the credential's person with their reader record and every check of their standing another; then
    the conditional UPDATEs, the loan, and at commit the audit entry and the outbox."""
    s = uow.session
    at = await desk(s, cmd.service_point, staff)
    item = await find_copy(s, cmd.item_barcode, at, cmd.item_library)
    if item.state_status is None:  # its first circulation: circulation's row is made from the catalogue's
        first = await item_state(s, item)
        item = dataclasses.replace(item, state_status=first.status, current_library=first.current_library)
    status = item.state_status
    assert status is not None
    now = utcnow()
    # the copy first: most refused scans (already lent, elsewhere) are decided before the reader is looked up
    facts = states.Facts(desk_library=at.library, current_library=item.current_library)
    held = status == states.ON_HOLD_SHELF  # the hold shelf's guard needs the reader: fired below
    if not held:
        t = states.fire("item", item.id, status, "checkout", facts, at=now)
    person, stand = await recognise_standing(s, svc, cmd.credential, at.library, now)
    reader_id, category = stand.reader_id, stand.category
    if reader_id is None:  # first use at this library
        rdr = await reader(s, person, at.library)
        reader_id, category = rdr.id, rdr.category
        stand = dataclasses.replace(stand, reader_blocked=rdr.blocked, reader_block_reason=rdr.block_reason)
    assert category is not None
    stand.refuse_reader(at.library)
    fed = await policies.federation_values(s)
    standing.refuse(
        stand, at.library, fed.overdue_block_days, (await policies.library_settings(s, at.library)).fine_block_fen
    )
    if held:
        holder_id = await holder(s, item) if item.request_id is not None else None
        facts = dataclasses.replace(facts, reader_id=reader_id, held_for_reader_id=holder_id)
        t = states.fire("item", item.id, status, "checkout", facts, at=now)
    policy = await policies.resolve(s, at.library, category, item.item_type)
    due_at = await calendar.due_date(s, at.library, now + dt.timedelta(days=policy.loan_days))
    loan = Loan(
        id=new_id(),
        item_id=item.id,
        barcode=item.barcode,
        owner_library=item.library,
        library=at.library,
        reader_id=reader_id,
        person_id=person.id,
        state=states.ACTIVE,
        checkout_service_point=at.code,
        checked_out_at=now,
        due_at=due_at,
        renewals=0,
        returned_at=None,
        checkin_service_point=None,
        version=1,
    )
    await _lend_writes(uow, item, t, at, loan, policy, has_borrower=stand.has_borrower)
    uow.emit(
        "circulation.checked_out",
        loan_id=loan.id,
        item_id=item.id,
        work_id=item.work_id,
        person_id=person.id,
        library=at.library,
        service_point=at.code,
    )
    await _audit(
        uow,
        svc,
        "circulation.checkout",
        staff,
        person.id,
        loan=loan.id,
        item=item.id,
        barcode=item.barcode,
        owner=item.library,
        service_point=at.code,
        due_at=loan.due_at.isoformat(),
    )
    return Lent(loan, item.request_id, item.title)


async def checkin(
    uow: UnitOfWork, svc: Services, cmd: Checkin, staff: Staff, holds: HoldRouter = no_holds
) -> CheckinResult:
    """Take a copy back at any desk: shelve it here, or send it home (or, later, to a waiting reader)."""
    s = uow.session
    at = await desk(s, cmd.service_point, staff)
    item = await find_copy(s, cmd.item_barcode, at, cmd.item_library, waiting=True, loan=True)
    if item.state_status is None:  # its first circulation: circulation's row is made from the catalogue's
        first = await item_state(s, item)
        item = dataclasses.replace(item, state_status=first.status, current_library=first.current_library)
    status = item.state_status
    assert status is not None
    now = utcnow()
    loan = _loan_of(item.loan) if item.loan is not None else None

    hold = await holds(s, item) if item.waiting else None
    if hold is not None and hold[0] == at.code:
        action, trigger, destination = "hold_shelf", "checkin_hold", at.code
    elif hold is not None:
        action, trigger, destination = "transit", "checkin_transit", hold[0]
    elif item.library == at.library or await policies.floats(s, item.library):
        action, trigger, destination = "shelve", "checkin", at.code
    else:
        action, trigger, destination = "transit", "checkin_transit", await main_service_point(s, item.library)

    t = states.fire("item", item.id, status, trigger, states.Facts(desk_library=at.library), at=now)
    lt = states.fire("loan", loan.id, loan.state, "checkin", states.Facts(), at=now) if loan is not None else None
    fresh = await _return_writes(uow, item, t, at, loan, lt)
    if loan is not None:
        assert lt is not None
        _committed(loan, state=lt.destination, returned_at=now, checkin_service_point=at.code, version=loan.version + 1)
        fine = await fines.accrue(uow, loan, now)
    else:
        fine = None

    transit = None
    if action == "transit":
        dest_library = (await desk(s, destination)).library
        transit = Transit(
            item_id=item.id,
            barcode=item.barcode,
            loan_id=loan.id if loan else None,
            reason="hold" if hold is not None else "return_home",
            from_library=at.library,
            from_service_point=at.code,
            to_library=dest_library,
            to_service_point=destination,
            state=states.IN_TRANSIT,
            created_at=now,
        )
        s.add(transit)
        await s.flush()
        uow.emit("circulation.transit_started", transit_id=transit.id, item_id=item.id, to_service_point=destination)

    person_id = loan.person_id if loan else None
    uow.emit(
        "circulation.checked_in",
        item_id=item.id,
        work_id=item.work_id,
        loan_id=loan.id if loan else None,
        person_id=person_id,
        action=action,
        destination=destination,
    )
    await _audit(
        uow,
        svc,
        "circulation.checkin",
        staff,
        person_id,
        loan=loan.id if loan else None,
        item=item.id,
        barcode=item.barcode,
        owner=item.library,
        service_point=at.code,
        action=action,
        destination=destination,
        transit=transit.id if transit else None,
        fine_fen=fine.amount_fen if fine else None,
    )
    return CheckinResult(action, destination, loan, transit, fresh, item.title)


async def receive(
    uow: UnitOfWork, svc: Services, cmd: Receipt, staff: Staff, holds: HoldRouter = no_holds
) -> tuple[Transit, ItemState]:
    """The copy arrived at the transit's destination library: it is available there, or on the hold shelf when a
    request picked up here waits for it."""
    s = uow.session
    transit = await s.get(Transit, cmd.transit_id)
    if transit is None:
        raise errors.TransitNotFound(f"no transit {cmd.transit_id}")
    at = await desk(s, cmd.service_point or transit.to_service_point, staff)
    now = utcnow()
    facts = states.Facts(desk_library=at.library, destination_library=transit.to_library)
    tt = states.fire("transit", transit.id, transit.state, "receive", facts, at=now)
    state = (await s.execute(select(ItemState).where(ItemState.item_id == transit.item_id))).scalar_one()
    hold = await holds(s, state)
    trigger = "receive_hold" if hold is not None and hold[0] == at.code else "receive"
    it = states.fire("item", state.item_id, state.status, trigger, facts, at=now)
    res = await s.execute(
        update(Transit)
        .where(Transit.id == transit.id, Transit.state == tt.source)
        .values(state=tt.destination, received_at=now, received_service_point=at.code)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:
        raise errors.TransitClosed("the transit was received a moment ago")
    await _move_item(uow, state, it, library=at.library, service_point=at.code)
    _emit(uow, tt)
    await s.refresh(transit)
    person_id = None
    if transit.loan_id:
        person_id = (await s.execute(select(Loan.person_id).where(Loan.id == transit.loan_id))).scalar_one()
    work_id = state.work_id
    uow.emit("circulation.transit_received", transit_id=transit.id, item_id=state.item_id, work_id=work_id)
    await _audit(
        uow,
        svc,
        "circulation.transit_receipt",
        staff,
        person_id,
        transit=transit.id,
        item=state.item_id,
        barcode=state.barcode,
        service_point=at.code,
    )
    fresh = (
        await s.execute(
            select(ItemState).where(ItemState.item_id == state.item_id).execution_options(populate_existing=True)
        )
    ).scalar_one()
    return transit, fresh


@functools.cache
def _renewal_statement(with_requests: bool) -> Statement:
    return Statement(_renewal_query(with_requests))


@functools.cache
def _renewal_query(with_requests: bool) -> Select[Any]:
    """Everything a renewal decides on, in one statement: the loan, its reader's category and block, the person's
    federation-wide block, the copy's item type and, with ``with_requests``, whether another reader's request
    waits for the copy or its work (bound parameter ``p_loan``)."""
    waiting: Any = false()
    if with_requests:
        waiting = exists().where(
            Request.state == states.QUEUED,
            Request.person_id != Loan.person_id,
            or_(
                and_(Request.work_id == ItemState.work_id, Request.requested_item_id.is_(None)),
                Request.requested_item_id == Loan.item_id,
            ),
        )
    return (
        select(
            *_LOANS.c,
            Reader.category,
            Reader.blocked,
            Reader.block_reason,
            Borrower.blocked,
            Borrower.block_reason,
            ItemRow.item_type,
            waiting,
        )
        .join(Reader, Reader.id == Loan.reader_id)
        .outerjoin(Borrower, Borrower.person_id == Loan.person_id)
        .outerjoin(ItemRow, ItemRow.id == Loan.item_id)
        .outerjoin(ItemState, ItemState.item_id == Loan.item_id)
        .where(Loan.id == bindparam("p_loan"))
    )


_RENEW = Statement(
    update(_LOANS)
    .where(
        _LOANS.c.id == bindparam("p_loan"),
        _LOANS.c.state == bindparam("p_source"),
        _LOANS.c.renewals == bindparam("p_renewals"),
    )
    .values(renewals=_LOANS.c.renewals + 1, due_at=bindparam("p_due"), version=_LOANS.c.version + 1)
)


async def renew(uow: UnitOfWork, svc: Services, cmd: Renewal, staff: Staff, *, requests_block: bool = False) -> Loan:
    """Extend a loan by the policy's period from today; staff renew any loan, a resident only their own. With
    ``requests_block`` (requests exist), refused while another reader's request waits for the copy or its work."""
    s = uow.session
    row = (await _renewal_statement(requests_block).run(s, {"p_loan": cmd.loan_id})).first()
    width = len(_LOAN_KEYS)
    loan = _loan_of(row[:width]) if row is not None else None
    if loan is None or (cmd.person_id is not None and loan.person_id != cmd.person_id):
        raise errors.LoanNotFound(f"no loan {cmd.loan_id}")
    assert row is not None
    category, reader_blocked, reader_reason, fed_blocked, fed_reason, item_type, waiting = row[width:]
    if loan.state == states.ACTIVE:
        if waiting:
            raise errors.RenewalBlockedByRequest("another reader waits for this work: please return it")
        if reader_blocked:
            raise errors.ReaderBlocked(f"blocked at {loan.library}: {reader_reason or 'ask the library'}")
        if fed_blocked:
            raise errors.ReaderBlocked(
                f"blocked in every member library: {fed_reason or 'ask a library'}", scope="federation"
            )
    policy = await policies.resolve(s, loan.library, category, item_type)
    now = utcnow()
    facts = states.Facts(renewals=loan.renewals, max_renewals=policy.max_renewals)
    t = states.fire("loan", loan.id, loan.state, "renew", facts, at=now)
    due = await calendar.due_date(s, loan.library, now + dt.timedelta(days=policy.loan_days))
    params = {"p_loan": loan.id, "p_source": t.source, "p_renewals": loan.renewals, "p_due": due}
    res = await _RENEW.run(s, params)
    if res.rowcount != 1:
        raise errors.RenewalLimit("the loan was renewed or returned a moment ago")
    _committed(loan, renewals=loan.renewals + 1, due_at=due, version=loan.version + 1)
    _emit(uow, t)
    uow.emit("circulation.renewed", loan_id=loan.id, person_id=loan.person_id, due_at=due.isoformat())
    await _audit(
        uow,
        svc,
        "circulation.renewal",
        staff,
        loan.person_id,
        loan=loan.id,
        item=loan.item_id,
        renewals=loan.renewals,
        due_at=due.isoformat(),
    )
    return loan


# --- reads ------------------------------------------------------------------------------------------------------


async def loans_of(session: AsyncSession, person_id: str) -> list[tuple[Loan, str | None]]:
    """A person's active loans at every library, with each work's title, earliest due first."""
    q = (
        select(Loan, Work.title)
        .outerjoin(ItemRow, ItemRow.id == Loan.item_id)
        .outerjoin(Work, Work.id == ItemRow.work_id)
        .where(Loan.person_id == person_id, Loan.state == states.ACTIVE)
        .order_by(Loan.due_at, Loan.id)
    )
    return [(loan, title) for loan, title in (await session.execute(q)).all()]


async def transits_at(session: AsyncSession, at: Desk, direction: str, limit: int = 500) -> list[Transit]:
    """Open transits arriving at (incoming) or leaving from (outgoing) a service point, oldest first."""
    column = Transit.to_service_point if direction == "incoming" else Transit.from_service_point
    q = (
        select(Transit)
        .where(column == at.code, Transit.state == states.IN_TRANSIT)
        .order_by(Transit.created_at, Transit.id)
        .limit(limit)
    )
    return list((await session.execute(q)).scalars())
