"""Circulation's figures for the two governments: loans by lending x home library, cross-city loans per month, transits.

Every report is one aggregate query (GROUP BY in the database) over circulation's tables joined to ``persons``
(the reader's home library) and ``institutions`` (each library's city). The figures carry no personal data, so
every librarian may read them, not only their own library's rows (see ``reports_api``).

Months are computed portably: ``EXTRACT(YEAR/MONTH)`` compiles to ``strftime`` on SQLite and to ``EXTRACT`` on
PostgreSQL, where the timestamp is first read in UTC (``timezone('UTC', ...)``) so the session's time zone cannot
move a loan into another month. SQLite stores the UTC wall time already.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from sqlalchemy import Integer, and_, case, cast, extract, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from federation.db import utcnow
from federation.identity.models import Person
from federation.members.models import Institution
from library.circulation import states
from library.circulation.models import Loan, Transit

UNKNOWN = "unknown"  # a reader whose person has no home library, or a library without a city


@dataclasses.dataclass(frozen=True)
class Period:
    """Loans made from ``since`` to ``until``, both days included (UTC); None: unbounded."""

    since: dt.date | None = None
    until: dt.date | None = None

    def where(self, column: Any) -> list[Any]:
        out = []
        if self.since is not None:
            out.append(column >= dt.datetime.combine(self.since, dt.time(), dt.UTC))
        if self.until is not None:
            out.append(column < dt.datetime.combine(self.until + dt.timedelta(days=1), dt.time(), dt.UTC))
        return out


@dataclasses.dataclass(frozen=True)
class LibraryPair:
    library: str  # the lending library
    home_library: str  # the reader's home library
    loans: int
    active: int  # of which still on loan


@dataclasses.dataclass(frozen=True)
class MonthFigures:
    month: str  # YYYY-MM
    loans: int
    cross_city: int


@dataclasses.dataclass(frozen=True)
class CityFlow:
    month: str
    lending_city: str
    home_city: str
    loans: int


@dataclasses.dataclass(frozen=True)
class TransitRoute:
    from_library: str
    to_library: str
    in_transit: int
    overdue: int
    oldest: dt.datetime


def _utc(session: AsyncSession, column: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return func.timezone("UTC", column)
    return column


async def loans_by_library(session: AsyncSession, period: Period) -> list[LibraryPair]:
    """Loans made in the period per lending library and reader's home library, busiest pair first."""
    home = func.coalesce(Person.home_institution, UNKNOWN)
    active = func.sum(case((Loan.state == states.ACTIVE, 1), else_=0))
    q = (
        select(Loan.library, home, func.count(Loan.id), active)
        .join(Person, Person.id == Loan.person_id)
        .where(*period.where(Loan.checked_out_at))
        .group_by(Loan.library, home)
        .order_by(Loan.library, home)
    )
    return [LibraryPair(lib, h, int(n), int(a or 0)) for lib, h, n, a in (await session.execute(q)).all()]


async def cross_city(session: AsyncSession, period: Period) -> tuple[list[MonthFigures], list[CityFlow]]:
    """Per month: every loan and those whose reader's home library is in another city than the lending library's;
    and the cross-city loans by lending city and home city. A reader without a home library is never cross-city."""
    lender = aliased(Institution)
    home = aliased(Institution)
    at = _utc(session, Loan.checked_out_at)
    year = cast(extract("year", at), Integer)
    month = cast(extract("month", at), Integer)
    crossing = and_(home.city.is_not(None), lender.city.is_not(None), home.city != lender.city)
    base = (
        select(year, month)
        .select_from(Loan)
        .join(Person, Person.id == Loan.person_id)
        .outerjoin(lender, lender.code == Loan.library)
        .outerjoin(home, home.code == Person.home_institution)
        .where(*period.where(Loan.checked_out_at))
    )
    totals = (
        base.add_columns(func.count(Loan.id), func.sum(case((crossing, 1), else_=0)))
        .group_by(year, month)
        .order_by(year, month)
    )
    months = [
        MonthFigures(f"{int(y):04d}-{int(m):02d}", int(n), int(c or 0)) for y, m, n, c in await session.execute(totals)
    ]
    flows_q = (
        base.add_columns(lender.city, home.city, func.count(Loan.id))
        .where(crossing)
        .group_by(year, month, lender.city, home.city)
        .order_by(year, month, lender.city, home.city)
    )
    flows = [
        CityFlow(f"{int(y):04d}-{int(m):02d}", lc, hc, int(n)) for y, m, lc, hc, n in await session.execute(flows_q)
    ]
    return months, flows


async def transits(
    session: AsyncSession, overdue_days: int, *, now: dt.datetime | None = None, limit: int = 200
) -> tuple[list[TransitRoute], list[Transit]]:
    """Open transits per route (from library, to library) with how many left more than ``overdue_days`` days ago;
    and the overdue transits themselves, oldest first (at most ``limit``)."""
    cutoff = (now or utcnow()) - dt.timedelta(days=overdue_days)
    late = Transit.created_at < cutoff
    q = (
        select(
            Transit.from_library,
            Transit.to_library,
            func.count(Transit.id),
            func.sum(case((late, 1), else_=0)),
            func.min(Transit.created_at),
        )
        .where(Transit.state == states.IN_TRANSIT)
        .group_by(Transit.from_library, Transit.to_library)
        .order_by(Transit.from_library, Transit.to_library)
    )
    rows = (await session.execute(q)).all()
    routes = []
    for f, t, n, o, oldest in rows:
        if isinstance(oldest, str):  # SQLite's MIN() answers the stored text, not through the column's type
            oldest = dt.datetime.fromisoformat(oldest)
        if oldest.tzinfo is None:
            oldest = oldest.replace(tzinfo=dt.UTC)
        routes.append(TransitRoute(f, t, int(n), int(o or 0), oldest.astimezone(dt.UTC)))
    overdue = (
        select(Transit)
        .where(Transit.state == states.IN_TRANSIT, late)
        .order_by(Transit.created_at, Transit.id)
        .limit(limit)
    )
    return routes, list((await session.execute(overdue)).scalars())


@dataclasses.dataclass(frozen=True)
class FillTime:
    pickup_library: str
    placed: int  # requests placed in the period
    filled: int  # of which a copy reached the hold shelf (``ready_at`` set), whatever happened next
    fulfilled: int  # of which the reader borrowed the copy
    open: int  # still waiting (queued, targeted, travelling) or on the hold shelf
    avg_hours: float | None  # placing to the hold shelf, over the filled ones
    max_hours: float | None


def _seconds_between(session: AsyncSession, start: Any, end: Any) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return extract("epoch", end - start)
    return (func.julianday(end) - func.julianday(start)) * 86_400.0


async def request_fill_time(session: AsyncSession, period: Period) -> list[FillTime]:
    """Per pickup library: requests placed in the period and how long a copy took to reach its hold shelf."""
    from library.circulation.models import Request  # requests arrived after the reports: imported where used

    took = _seconds_between(session, Request.created_at, Request.ready_at)
    q = (
        select(
            Request.pickup_library,
            func.count(Request.id),
            func.count(Request.ready_at),
            func.sum(case((Request.state == states.FULFILLED, 1), else_=0)),
            func.sum(case((Request.state.in_(states.OPEN_REQUEST_STATES), 1), else_=0)),
            func.avg(took),
            func.max(took),
        )
        .where(*period.where(Request.created_at))
        .group_by(Request.pickup_library)
        .order_by(Request.pickup_library)
    )
    out = []
    for lib, placed, filled, done, waiting, avg, most in await session.execute(q):
        out.append(
            FillTime(
                lib,
                int(placed),
                int(filled),
                int(done or 0),
                int(waiting or 0),
                round(float(avg) / 3600, 2) if avg is not None else None,
                round(float(most) / 3600, 2) if most is not None else None,
            )
        )
    return out
