"""Circulation's administration without a deploy: reader blocks, item declarations, loan policies, closed days.

Administrators act for every library; a librarian acts for their own library only (its copies, its readers, its
rules and calendar): ``scope`` is the library a caller is confined to, ``None`` for an administrator. Every change
is audited with what it was before, in the transaction that makes it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from federation.db import UnitOfWork, dialect_insert, new_id, utcnow
from federation.members.models import Institution, InstitutionKind
from federation.services import Services
from library.catalog.models import ItemRow
from library.circulation import errors, policies, requests, service, states
from library.circulation.models import ANY, Borrower, ClosedDay, LibraryPolicy, Loan, LoanPolicy, Reader, Request

DECLARATIONS = {"missing": "declare_missing", "lost": "declare_lost", "withdrawn": "withdraw", "found": "found"}


def _allowed(scope: str | None, library: str) -> None:
    if scope is not None and scope != library:
        raise errors.NotYourLibrary(f"{library} is not your library ({scope})")


async def library_code(session: AsyncSession, code: str) -> str:
    """A member library's code, normalised; refused for an unknown code or a member that is not a library."""
    code = code.strip().upper()
    kind = await session.scalar(select(Institution.kind).where(Institution.code == code))
    if kind != InstitutionKind.LIBRARY:
        raise errors.LibraryNotFound(f"no member library {code}")
    return code


async def _audit(
    uow: UnitOfWork, svc: Services, action: str, staff: service.Staff, person: str | None, **d: Any
) -> None:
    await service._audit(uow, svc, action, staff, person, **d)


# --- reader blocks ----------------------------------------------------------------------------------------------


async def set_block(
    uow: UnitOfWork,
    svc: Services,
    cred: service.Credential,
    blocked: bool,
    reason: str,
    staff: service.Staff,
    scope: str | None,
) -> Borrower:
    """Block or unblock a person in every member library; a librarian only a reader registered at their library."""
    s = uow.session
    person = await service.recognise(s, svc, cred)
    if scope is not None:
        registered = await s.scalar(select(Reader.id).where(Reader.person_id == person.id, Reader.library == scope))
        if registered is None:
            raise errors.NotYourLibrary(f"the person is no reader of {scope}")
    await s.execute(
        dialect_insert(s, Borrower)
        .values(person_id=person.id, active_loans=0, blocked=False)
        .on_conflict_do_nothing(index_elements=["person_id"])
    )
    before = await s.scalar(select(Borrower.blocked).where(Borrower.person_id == person.id))
    await s.execute(
        update(Borrower)
        .where(Borrower.person_id == person.id)
        .values(blocked=blocked, block_reason=reason if blocked else None)
        .execution_options(synchronize_session=False)
    )
    row = (
        await s.execute(
            select(Borrower).where(Borrower.person_id == person.id).execution_options(populate_existing=True)
        )
    ).scalar_one()
    action = "circulation.reader_blocked" if blocked else "circulation.reader_unblocked"
    uow.emit(action, person_id=person.id)
    await _audit(uow, svc, action, staff, person.id, reason=reason, was_blocked=bool(before))
    return row


# --- item declarations ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Declared:
    item: Any  # ItemState
    loan: Loan | None


async def declare(
    uow: UnitOfWork,
    svc: Services,
    barcode: str,
    item_library: str | None,
    declaration: str,
    note: str | None,
    staff: service.Staff,
    scope: str | None,
) -> Declared:
    """Declare a copy missing, lost (ends its loan), withdrawn, or found again; through the item's state table."""
    s = uow.session
    q = select(ItemRow).where(ItemRow.barcode == barcode.strip())
    if item_library:
        q = q.where(ItemRow.library == item_library.strip().upper())
    elif scope is not None:
        q = q.where(ItemRow.library == scope)
    rows = list((await s.execute(q)).scalars())
    if not rows:
        raise errors.ItemNotFound(f"no copy with barcode {barcode}")
    if len(rows) > 1:
        raise errors.AmbiguousBarcode(
            f"{len(rows)} libraries hold a copy with barcode {barcode}: send item_library",
            libraries=sorted(r.library for r in rows),
        )
    item = rows[0]
    _allowed(scope, item.library)
    state = await service.item_state(s, item)
    now = utcnow()
    trigger = DECLARATIONS[declaration]
    t = states.fire("item", item.id, state.status, trigger, states.Facts(), at=now)
    loan = None
    if trigger == "declare_lost":
        loan = (
            await s.execute(select(Loan).where(Loan.item_id == item.id, Loan.state == states.ACTIVE))
        ).scalar_one_or_none()
    await service._move_item(uow, state, t, library=state.current_library, service_point=state.current_service_point)
    if loan is not None:
        lt = states.fire("loan", loan.id, loan.state, "declare_lost", states.Facts(), at=now)
        res = await s.execute(
            update(Loan)
            .where(Loan.id == loan.id, Loan.state == lt.source)
            .values(state=lt.destination, returned_at=now, version=Loan.version + 1)
            .execution_options(synchronize_session=False)
        )
        if res.rowcount != 1:
            raise errors.LoanNotActive("the loan was closed a moment ago")
        await service._count(uow, loan.reader_id, loan.person_id, -1, None)
        service._emit(uow, lt)
        await s.refresh(loan)
    fresh = await requests._fresh(s, item.id)
    # a request waiting on this copy looks for another; a copy found again may fill a waiting request
    if trigger in ("declare_missing", "withdraw"):
        bound = (
            await s.execute(select(Request).where(Request.item_id == item.id, Request.state == states.TARGETED))
        ).scalar_one_or_none()
        if bound is not None:
            await requests._change(uow, bound, "untarget", now, item_id=None, targeted_at=None)
            await requests._target(uow, bound, now)
    elif trigger == "found":
        nxt = await requests.next_request(s, fresh)
        if nxt is not None and nxt.state == states.QUEUED:
            await requests._target(uow, nxt, now)
    uow.emit(
        "circulation.item_declared", item_id=item.id, work_id=item.work_id, declaration=declaration, by=staff.actor
    )
    await _audit(
        uow,
        svc,
        f"circulation.item_{declaration}",
        staff,
        loan.person_id if loan else None,
        item=item.id,
        barcode=item.barcode,
        owner=item.library,
        was=t.source,
        loan=loan.id if loan else None,
        note=note,
    )
    return Declared(await requests._fresh(s, item.id), loan)


# --- policies ---------------------------------------------------------------------------------------------------

FEDERATION_FIELDS = (
    "max_total_loans",
    "loan_days",
    "max_renewals",
    "overdue_block_days",
    "due_soon_days",
    "transit_overdue_days",
)
LIBRARY_FIELDS = (
    "floating",
    "lends_to_other_libraries",
    "hold_shelf_days",
    "fine_per_day_fen",
    "fine_cap_fen",
    "fine_block_fen",
)
RULE_FIELDS = ("loan_days", "max_renewals", "max_loans", "can_request")


def _values(row: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    return {f: getattr(row, f) for f in fields}


async def federation_policy(session: AsyncSession) -> dict[str, Any]:
    return _values(await policies.federation(session), FEDERATION_FIELDS)


async def set_federation_policy(
    uow: UnitOfWork, svc: Services, values: dict[str, Any], staff: service.Staff
) -> dict[str, Any]:
    before = await federation_policy(uow.session)
    row = await policies.set_federation(uow.session)
    for f in FEDERATION_FIELDS:
        setattr(row, f, values[f])
    await uow.session.flush()
    after = await federation_policy(uow.session)
    await _audit(uow, svc, "circulation.policy_changed", staff, None, policy="federation", before=before, after=after)
    return after


def _library_defaults(library: str) -> LibraryPolicy:
    return LibraryPolicy(library=library, floating=False, lends_to_other_libraries=True)


async def library_policy(session: AsyncSession, library: str) -> tuple[LibraryPolicy, list[LoanPolicy]]:
    row = await session.get(LibraryPolicy, library) or _library_defaults(library)
    rules = (
        await session.execute(
            select(LoanPolicy)
            .where(LoanPolicy.library == library)
            .order_by(LoanPolicy.reader_category, LoanPolicy.item_type)
        )
    ).scalars()
    return row, list(rules)


async def set_library_policy(
    uow: UnitOfWork, svc: Services, library: str, values: dict[str, Any], staff: service.Staff, scope: str | None
) -> LibraryPolicy:
    s = uow.session
    library = await library_code(s, library)
    _allowed(scope, library)
    row = await s.get(LibraryPolicy, library)
    before = _values(row, LIBRARY_FIELDS) if row is not None else None
    if row is None:
        row = _library_defaults(library)
        s.add(row)
    for f in LIBRARY_FIELDS:
        setattr(row, f, values[f])
    await s.flush()
    await _audit(
        uow,
        svc,
        "circulation.policy_changed",
        staff,
        None,
        policy=f"library:{library}",
        before=before,
        after=_values(row, LIBRARY_FIELDS),
    )
    return row


def _rule_key(category: str, item_type: str) -> tuple[str, str]:
    category = category.strip().lower()
    if category != ANY and category not in policies.CATEGORIES:
        raise errors.PolicyNotFound(f"no reader category {category}: one of {', '.join(policies.CATEGORIES)} or *")
    return category, item_type.strip() or ANY


async def set_rule(
    uow: UnitOfWork,
    svc: Services,
    library: str,
    category: str,
    item_type: str,
    values: dict[str, Any],
    staff: service.Staff,
    scope: str | None,
) -> LoanPolicy:
    """Create or change the rule for (library, reader category, item type); ``*`` for any."""
    s = uow.session
    library = await library_code(s, library)
    _allowed(scope, library)
    category, item_type = _rule_key(category, item_type)
    q = select(LoanPolicy).where(
        LoanPolicy.library == library, LoanPolicy.reader_category == category, LoanPolicy.item_type == item_type
    )
    row = (await s.execute(q)).scalar_one_or_none()
    before = _values(row, RULE_FIELDS) if row is not None else None
    if row is None:
        row = LoanPolicy(id=new_id(), library=library, reader_category=category, item_type=item_type)
        s.add(row)
    for f in RULE_FIELDS:
        setattr(row, f, values[f])
    try:
        async with s.begin_nested():
            await s.flush()
    except IntegrityError:  # another administrator created the same rule a moment ago
        raise errors.TransitionRefused("the rule was created a moment ago: read it and try again") from None
    await _audit(
        uow,
        svc,
        "circulation.policy_changed",
        staff,
        None,
        policy=f"rule:{library}:{category}:{item_type}",
        before=before,
        after=_values(row, RULE_FIELDS),
    )
    return row


async def delete_rule(
    uow: UnitOfWork, svc: Services, library: str, category: str, item_type: str, staff: service.Staff, scope: str | None
) -> None:
    s = uow.session
    library = await library_code(s, library)
    _allowed(scope, library)
    category, item_type = _rule_key(category, item_type)
    q = select(LoanPolicy).where(
        LoanPolicy.library == library, LoanPolicy.reader_category == category, LoanPolicy.item_type == item_type
    )
    row = (await s.execute(q)).scalar_one_or_none()
    if row is None:
        raise errors.PolicyNotFound(f"no rule for {category} readers and {item_type} items at {library}")
    before = _values(row, RULE_FIELDS)
    await s.delete(row)
    await s.flush()
    await _audit(
        uow,
        svc,
        "circulation.policy_changed",
        staff,
        None,
        policy=f"rule:{library}:{category}:{item_type}",
        before=before,
        after=None,
    )


# --- closed days ------------------------------------------------------------------------------------------------


async def closed_days(session: AsyncSession, library: str) -> list[ClosedDay]:
    library = await library_code(session, library)
    q = select(ClosedDay).where(ClosedDay.library == library).order_by(ClosedDay.weekday, ClosedDay.date)
    return list((await session.execute(q)).scalars())


async def add_closed_day(
    uow: UnitOfWork,
    svc: Services,
    library: str,
    date: dt.date | None,
    weekday: int | None,
    note: str | None,
    staff: service.Staff,
    scope: str | None,
) -> ClosedDay:
    """Close a library on one date or on a weekday every week (never all seven); due dates move past them."""
    s = uow.session
    library = await library_code(s, library)
    _allowed(scope, library)
    if weekday is not None:
        weekly = set((await s.execute(select(ClosedDay.weekday).where(ClosedDay.library == library))).scalars())
        if len((weekly - {None}) | {weekday}) >= 7:
            raise errors.AlwaysClosed("closed on every weekday, the library would never be open to return to")
    row = ClosedDay(id=new_id(), library=library, date=date, weekday=weekday, note=note)
    s.add(row)
    try:
        async with s.begin_nested():
            await s.flush()
    except IntegrityError:
        raise errors.ClosedDayExists(f"{library} is already closed on {date or f'weekday {weekday}'}") from None
    await _audit(
        uow,
        svc,
        "circulation.closed_day_added",
        staff,
        None,
        library=library,
        date=date.isoformat() if date else None,
        weekday=weekday,
        note=note,
    )
    return row


async def remove_closed_day(
    uow: UnitOfWork, svc: Services, library: str, day_id: str, staff: service.Staff, scope: str | None
) -> None:
    s = uow.session
    library = await library_code(s, library)
    _allowed(scope, library)
    row = await s.get(ClosedDay, day_id)
    if row is None or row.library != library:
        raise errors.ClosedDayNotFound(f"no closed day {day_id} at {library}")
    await s.execute(delete(ClosedDay).where(ClosedDay.id == day_id))
    await _audit(
        uow,
        svc,
        "circulation.closed_day_removed",
        staff,
        None,
        library=library,
        date=row.date.isoformat() if row.date else None,
        weekday=row.weekday,
    )
