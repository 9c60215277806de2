"""Loan rules as data: rows per lending library x reader category x item type, and the federation's limits.

The most specific matching row wins (exact category and item type before ``*``); where no library row matches,
the federation row gives the loan period and renewals. A missing federation row means the built-in defaults
below (the migration seeds the same values), so a database truncated between tests still lends.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy.ext.asyncio import AsyncSession

from library.circulation import cache
from library.circulation.models import ANY, FederationPolicy

DEFAULT_MAX_TOTAL_LOANS = 8
DEFAULT_LOAN_DAYS = 30
DEFAULT_MAX_RENEWALS = 1
DEFAULT_DUE_SOON_DAYS = 3
DEFAULT_TRANSIT_OVERDUE_DAYS = 7

# reader categories by age on the day of registration: (category, from age, to age exclusive)
CATEGORY_AGES: tuple[tuple[str, int, int], ...] = (("child", 0, 14), ("adult", 14, 60), ("senior", 60, 200))
CATEGORIES = tuple(c for c, _, _ in CATEGORY_AGES)


@dataclasses.dataclass(frozen=True)
class Policy:
    loan_days: int
    max_renewals: int
    max_loans: int | None  # at the lending library
    max_total_loans: int  # across every library
    can_request: bool = True


def category_for(birth_date: dt.date | None, today: dt.date) -> str:
    if birth_date is None:
        return "adult"
    age = today.year - birth_date.year - ((today.month, today.day) < (birth_date.month, birth_date.day))
    for category, low, high in CATEGORY_AGES:
        if low <= age < high:
            return category
    return "adult"


async def federation(session: AsyncSession) -> FederationPolicy:
    row = await session.get(FederationPolicy, "federation")
    if row is None:
        return _defaults()
    return row


async def federation_values(session: AsyncSession) -> cache.Federation:
    """The federation's limits from this process's copy (see ``cache`` for how fresh it is)."""
    fed = (await cache.snapshot(session)).federation
    if fed is None:
        return cache.Federation(
            DEFAULT_MAX_TOTAL_LOANS,
            DEFAULT_LOAN_DAYS,
            DEFAULT_MAX_RENEWALS,
            None,
            DEFAULT_DUE_SOON_DAYS,
            DEFAULT_TRANSIT_OVERDUE_DAYS,
        )
    return fed


def _defaults() -> FederationPolicy:
    """The built-in federation row (column defaults apply only on insert: an unsaved row needs them spelt out)."""
    return FederationPolicy(
        id="federation",
        max_total_loans=DEFAULT_MAX_TOTAL_LOANS,
        loan_days=DEFAULT_LOAN_DAYS,
        max_renewals=DEFAULT_MAX_RENEWALS,
        overdue_block_days=None,
        due_soon_days=DEFAULT_DUE_SOON_DAYS,
        transit_overdue_days=DEFAULT_TRANSIT_OVERDUE_DAYS,
    )


def _specificity(row: cache.Rule) -> int:
    return (row.reader_category != ANY) * 2 + (row.item_type != ANY)


async def resolve(session: AsyncSession, library: str, category: str, item_type: str | None) -> Policy:
    """The rule for lending a copy of ``item_type`` to a reader of ``category`` at ``library``."""
    fed = await federation_values(session)
    wanted_types = (item_type or ANY, ANY)
    rows = sorted(
        (
            r
            for r in (await cache.snapshot(session)).rules.get(library, ())
            if r.reader_category in (category, ANY) and r.item_type in wanted_types
        ),
        key=_specificity,
        reverse=True,
    )
    if not rows:
        return Policy(fed.loan_days, fed.max_renewals, None, fed.max_total_loans)
    best = rows[0]
    return Policy(best.loan_days, best.max_renewals, best.max_loans, fed.max_total_loans, best.can_request)


async def library_settings(session: AsyncSession, library: str) -> cache.LibrarySettings:
    """A library's own settings (floating, fines, hold shelf), the built-in ones when it has no row."""
    return (await cache.snapshot(session)).library(library) or cache.LibrarySettings()


async def floats(session: AsyncSession, library: str) -> bool:
    """Whether ``library``'s copies stay where they are returned instead of travelling home."""
    return (await library_settings(session, library)).floating


async def set_federation(
    session: AsyncSession,
    *,
    max_total_loans: int | None = None,
    loan_days: int | None = None,
    max_renewals: int | None = None,
) -> FederationPolicy:
    """Change the federation row (created with the defaults when missing); the caller commits."""
    row = await session.get(FederationPolicy, "federation")
    if row is None:
        row = _defaults()
        session.add(row)
    if max_total_loans is not None:
        row.max_total_loans = max_total_loans
    if loan_days is not None:
        row.loan_days = loan_days
    if max_renewals is not None:
        row.max_renewals = max_renewals
    await session.flush()
    return row
