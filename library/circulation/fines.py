"""Fines for late returns, where a library charges them: fixed at check-in, paid or waived by its staff.

The amount is the library's rate per item per open day late (its closed days are not counted), up to its cap
per loan, in fen. A library without a rate charges nothing.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from federation.audit.service import Record
from federation.db import UnitOfWork, new_id, utcnow
from federation.identity.idnumber import mask_id_numbers_in_text
from federation.services import Services
from library.circulation import calendar, errors, policies
from library.circulation.models import Fine, Loan

OPEN, PAID, WAIVED = "open", "paid", "waived"


async def assess(session: AsyncSession, loan: Loan, returned_at: dt.datetime) -> tuple[int, int]:
    """(open days late, amount in fen) of ``loan`` returned at ``returned_at``; (0, 0) when on time or free."""
    if returned_at <= loan.due_at:
        return 0, 0
    lib = await policies.library_settings(session, loan.library)
    if not lib.fine_per_day_fen:
        return 0, 0
    days = (await calendar.of(session, loan.library)).open_days_between(loan.due_at, returned_at)
    amount = days * lib.fine_per_day_fen
    if lib.fine_cap_fen is not None:
        amount = min(amount, lib.fine_cap_fen)
    return days, amount


async def accrue(uow: UnitOfWork, loan: Loan, returned_at: dt.datetime) -> Fine | None:
    """The fine of a loan checked in late, stored with the check-in (one per loan)."""
    days, amount = await assess(uow.session, loan, returned_at)
    if amount <= 0:
        return None
    fine = Fine(
        id=new_id(),
        loan_id=loan.id,
        person_id=loan.person_id,
        library=loan.library,
        days=days,
        amount_fen=amount,
        state=OPEN,
        created_at=returned_at,
    )
    uow.session.add(fine)
    await uow.session.flush()
    uow.emit(
        "circulation.fine_accrued",
        fine_id=fine.id,
        loan_id=loan.id,
        person_id=loan.person_id,
        library=loan.library,
        amount_fen=amount,
        days=days,
    )
    return fine


async def settle(
    uow: UnitOfWork, svc: Services, fine_id: str, how: str, actor: str, library: str | None, note: str | None
) -> Fine:
    """Record a payment (``paid``) or a waiver (``waived``); staff settle only their own library's fines."""
    s = uow.session
    note = mask_id_numbers_in_text(note) if note else note  # free text kept in clear never holds an ID number
    fine = await s.get(Fine, fine_id)
    if fine is None:
        raise errors.FineNotFound(f"no fine {fine_id}")
    if library is not None and fine.library != library:
        raise errors.NotYourLibrary(f"the fine is {fine.library}'s")
    now = utcnow()
    res = await s.execute(
        update(Fine)
        .where(Fine.id == fine.id, Fine.state == OPEN)
        .values(state=how, settled_at=now, settled_by=actor, note=note)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:
        raise errors.FineSettled(f"the fine is {fine.state}", state=fine.state)
    await s.refresh(fine)
    uow.emit(f"circulation.fine_{how}", fine_id=fine.id, person_id=fine.person_id, amount_fen=fine.amount_fen)
    await svc.audit(
        uow,
        Record(
            action=f"circulation.fine_{'payment' if how == PAID else 'waiver'}",
            actor=actor,
            actor_institution=library,
            subject_person_id=fine.person_id,
            details={"fine": fine.id, "loan": fine.loan_id, "amount_fen": fine.amount_fen, "note": note},
        ),
    )
    return fine


async def fines_of(session: AsyncSession, person_id: str) -> list[Fine]:
    q = select(Fine).where(Fine.person_id == person_id).order_by(Fine.created_at.desc(), Fine.id)
    return list((await session.execute(q)).scalars())
