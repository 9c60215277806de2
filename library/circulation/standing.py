"""Whether a person may borrow: a federation-wide block, an overdue loan beyond the federation's limit, open fines
above a library's threshold. Each check is an indexed lookup, so its cost does not grow with the loans held; a
checkout asks them all, with the reader record, in one statement (``of``)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, bindparam, func, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from federation.direct import Statement
from federation.identity import service as identity
from federation.identity.crypto import FieldCipher
from federation.identity.models import Person
from library.circulation import cache, errors, policies, states
from library.circulation.models import Borrower, Fine, Loan, Reader


@dataclasses.dataclass(frozen=True)
class Standing:
    """A person's standing at one library, as one statement read it."""

    reader_id: str | None  # None: no reader record at this library yet
    category: str | None
    reader_blocked: bool
    reader_block_reason: str | None
    has_borrower: bool  # the person's federation-wide row exists
    blocked: bool  # federation-wide
    block_reason: str | None
    late_loan: str | None  # a loan overdue beyond the federation's limit (when it sets one)
    owed_fen: int  # open fines at this library (counted only when it blocks on them)

    def refuse_reader(self, library: str) -> None:
        if self.reader_blocked:
            raise errors.ReaderBlocked(f"blocked at {library}: {self.reader_block_reason or 'ask the library'}")


@functools.cache
def _standing_statement(late_loans: bool, fines: bool, by_credential: bool = False) -> Statement:
    return Statement(_standing_query(late_loans, fines, by_credential))


@functools.cache
def _standing_query(late_loans: bool, fines: bool, by_credential: bool = False) -> Select[Any]:
    """``of``'s statement, built once per shape with bound parameters (``p_person``, ``p_library``,
    ``p_late_before``): only the checks the rules in force ask for are in it. ``by_credential``: the person is the
    one a presented credential names (``identity.holder_query``'s parameters instead of ``p_person``), and the
    identifier's and the person's columns come first: ``of_credential``'s one statement."""
    library = bindparam("p_library")
    late: Any = literal(None)
    if late_loans:
        late = (
            select(Loan.id)
            .where(Loan.person_id == Person.id, Loan.state == states.ACTIVE, Loan.due_at < bindparam("p_late_before"))
            .limit(1)
            .scalar_subquery()
        )
    owed: Any = literal(0)
    if fines:
        owed = (
            select(func.coalesce(func.sum(Fine.amount_fen), 0))
            .where(Fine.person_id == Person.id, Fine.library == library, Fine.state == "open")
            .scalar_subquery()
        )
    columns = (
        Reader.id,
        Reader.category,
        Reader.blocked,
        Reader.block_reason,
        Borrower.person_id,
        Borrower.blocked,
        Borrower.block_reason,
        late,
        owed,
    )
    if by_credential:
        q = identity.holder_query(*columns)
    else:
        q = select(*columns).select_from(Person).where(Person.id == bindparam("p_person"))
    return q.outerjoin(Reader, (Reader.person_id == Person.id) & (Reader.library == library)).outerjoin(
        Borrower, Borrower.person_id == Person.id
    )


def _params(library: str, now: dt.datetime, fed: cache.Federation) -> dict[str, object]:
    params: dict[str, object] = {"p_library": library}
    if fed.overdue_block_days is not None:
        params["p_late_before"] = now - dt.timedelta(days=fed.overdue_block_days)
    return params


def _standing(row: Sequence[Any]) -> Standing:
    return Standing(
        reader_id=row[0],
        category=row[1],
        reader_blocked=bool(row[2]),
        reader_block_reason=row[3],
        has_borrower=row[4] is not None,
        blocked=bool(row[5]),
        block_reason=row[6],
        late_loan=row[7],
        owed_fen=int(row[8] or 0),
    )


async def of(session: AsyncSession, person_id: str, library: str, now: dt.datetime) -> Standing:
    """The reader record, the federation-wide block, the oldest too-late loan and the open fines, in one query."""
    fed = await policies.federation_values(session)
    lib = await policies.library_settings(session, library)
    q = _standing_statement(fed.overdue_block_days is not None, lib.fine_block_fen is not None)
    row = (await q.run(session, {**_params(library, now, fed), "p_person": person_id})).one()
    return _standing(row)


async def of_credential(
    session: AsyncSession, cipher: FieldCipher, inp: identity.IdentifierInput, library: str, now: dt.datetime
) -> tuple[identity.Holder, Standing]:
    """Who holds the credential and their standing at ``library`` (``identity.credential_holder`` and ``of``), in
    one statement; the credential's refusals are the identity layer's. A merged person's standing is the
    survivor's, read by a second statement."""
    fed = await policies.federation_values(session)
    lib = await policies.library_settings(session, library)
    q = _standing_statement(fed.overdue_block_days is not None, lib.fine_block_fen is not None, True)
    params = {**_params(library, now, fed), **identity.holder_params(cipher, inp)}
    row = (await q.run(session, params)).first()
    holder = await identity.holder_of(session, inp, row)
    assert row is not None
    if holder.id != row[1]:
        return holder, await of(session, holder.id, library, now)
    return holder, _standing(row[4:])


def refuse(standing: Standing, library: str, fed_overdue_days: int | None, fine_block_fen: int | None) -> None:
    """Refuse a checkout at ``library`` as ``refuse_checkout`` does, from a standing already read."""
    if standing.blocked:
        raise errors.ReaderBlocked(
            f"blocked in every member library: {standing.block_reason or 'ask a library'}", scope="federation"
        )
    if standing.late_loan is not None:
        raise errors.OverdueBlock(
            f"a loan is more than {fed_overdue_days} days overdue: return it first", loan=standing.late_loan
        )
    if fine_block_fen is not None and standing.owed_fen > fine_block_fen:
        raise errors.FineBlock(
            f"open fines of ¥{standing.owed_fen / 100:.2f} at {library}, above ¥{fine_block_fen / 100:.2f}",
            owed_fen=standing.owed_fen,
        )


async def refuse_blocked(session: AsyncSession, person_id: str) -> None:
    """Refuse a person blocked federation-wide (checkout, renewal, request alike)."""
    row = (
        await session.execute(select(Borrower.blocked, Borrower.block_reason).where(Borrower.person_id == person_id))
    ).first()
    if row is not None and row[0]:
        raise errors.ReaderBlocked(f"blocked in every member library: {row[1] or 'ask a library'}", scope="federation")


async def refuse_checkout(session: AsyncSession, person_id: str, library: str, now: dt.datetime) -> None:
    """Refuse a checkout at ``library`` to a blocked person, one with a loan overdue too long, or one whose open
    fines at this library are above its threshold."""
    fed = await policies.federation_values(session)
    lib = await policies.library_settings(session, library)
    refuse(await of(session, person_id, library, now), library, fed.overdue_block_days, lib.fine_block_fen)
