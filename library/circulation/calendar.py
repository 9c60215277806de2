"""Closed days of a library: due dates that fall on one move to the next open day; fines count only open days.

Days are China's calendar days (Asia/Shanghai): a loan due at 01:00 UTC is due on that morning in Chengdu.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from library.circulation import cache

TZ = ZoneInfo("Asia/Shanghai")
HORIZON_DAYS = 366  # a calendar closed for more than a year in a row is a mistake, not a calendar


@dataclasses.dataclass(frozen=True)
class Calendar:
    dates: frozenset[dt.date] = frozenset()
    weekdays: frozenset[int] = frozenset()  # 0 Monday .. 6 Sunday

    def is_closed(self, day: dt.date) -> bool:
        return day in self.dates or day.weekday() in self.weekdays

    def next_open(self, due: dt.datetime) -> dt.datetime:
        """``due``, or the same time of the first open day after it (China time)."""
        local = due.astimezone(TZ)
        for _ in range(HORIZON_DAYS):
            if not self.is_closed(local.date()):
                return local.astimezone(dt.UTC)
            local += dt.timedelta(days=1)
        return due  # never: the API refuses a calendar closed every weekday

    def open_days_between(self, start: dt.datetime, end: dt.datetime) -> int:
        """Open days after ``start``'s day up to and including ``end``'s day: the days a return was late."""
        first, last = start.astimezone(TZ).date(), end.astimezone(TZ).date()
        days, day = 0, first + dt.timedelta(days=1)
        while day <= last:
            days += not self.is_closed(day)
            day += dt.timedelta(days=1)
        return days


def local_day(at: dt.datetime) -> dt.date:
    return at.astimezone(TZ).date()


async def of(session: AsyncSession, library: str) -> Calendar:
    """The library's calendar, from this process's copy (see ``cache`` for how fresh it is)."""
    snap = await cache.snapshot(session)
    return Calendar(snap.closed_dates.get(library, frozenset()), snap.closed_weekdays.get(library, frozenset()))


async def due_date(session: AsyncSession, library: str, due: dt.datetime) -> dt.datetime:
    """The due date a loan from ``library`` gets: moved past the library's closed days."""
    return (await of(session, library)).next_open(due)
