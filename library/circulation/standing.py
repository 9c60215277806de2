"""Whether a person may borrow: a federation-wide block, an overdue loan beyond the federation's limit, open fines
above a library's threshold. Each check is one indexed query, so its cost does not grow with the loans held."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from library.circulation import errors, policies, states
from library.circulation.models import Borrower, Fine, LibraryPolicy, Loan


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
    await refuse_blocked(session, person_id)
    fed = await policies.federation(session)
    if fed.overdue_block_days is not None:
        late = await session.scalar(
            select(Loan.id)
            .where(
                Loan.person_id == person_id,
                Loan.state == states.ACTIVE,
                Loan.due_at < now - dt.timedelta(days=fed.overdue_block_days),
            )
            .limit(1)
        )
        if late is not None:
            raise errors.OverdueBlock(
                f"a loan is more than {fed.overdue_block_days} days overdue: return it first", loan=late
            )
    lib = await session.get(LibraryPolicy, library)
    if lib is not None and lib.fine_block_fen is not None:
        owed = await session.scalar(
            select(func.coalesce(func.sum(Fine.amount_fen), 0)).where(
                Fine.person_id == person_id, Fine.library == library, Fine.state == "open"
            )
        )
        if int(owed or 0) > lib.fine_block_fen:
            raise errors.FineBlock(
                f"open fines of ¥{int(owed or 0) / 100:.2f} at {library}, above ¥{lib.fine_block_fen / 100:.2f}",
                owed_fen=int(owed or 0),
            )
