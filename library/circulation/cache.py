"""Per-process copies of circulation's slow-changing data: service points, loan rules, library settings, closed
days. A checkout reads them all; without the copies they were half of its statements.

How stale a copy can be, and why:

- a write to one of the cached tables through any engine of this process (ORM, Core or raw SQL) bumps a
  generation number when the statement runs and again when its transaction commits or rolls back, so this
  process's next read reloads (and a reload that raced with the write is not kept under the new generation);
- a write from another process (another ``twincity run`` worker, the CLI, a migration) is seen within ``TTL_S``
  seconds, when the copy expires. Administrators change rules a few times a year; two seconds is the bound.

One snapshot per engine (keyed weakly, so a disposed test database takes its copy with it), loaded whole in the
caller's session: the tables are small (rows per library, not per loan or copy).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import time
import weakref
from typing import Any

from sqlalchemy import Engine, event, exc, select
from sqlalchemy.ext.asyncio import AsyncSession

from federation.members.models import Institution, InstitutionKind, ServicePoint
from library.circulation.models import ClosedDay, FederationPolicy, LibraryPolicy, LoanPolicy

TTL_S = 2.0
TABLES = (
    "service_points",
    "institutions",
    "circ_loan_policies",
    "circ_library_policies",
    "circ_federation_policy",
    "circ_closed_days",
)
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "TRUNCATE", "DROP", "ALTER")
_TABLE_NAMES = re.compile(r"\b(?:" + "|".join(TABLES) + r")\b", re.IGNORECASE)  # a column named alike is no match


@dataclasses.dataclass(frozen=True)
class Point:
    code: str
    library: str  # the institution's code
    kind: str  # the institution's kind (only libraries' points are desks)
    is_main: bool


@dataclasses.dataclass(frozen=True)
class Federation:
    """The federation row's values (the built-in defaults when the row is missing)."""

    max_total_loans: int
    loan_days: int
    max_renewals: int
    overdue_block_days: int | None
    due_soon_days: int
    transit_overdue_days: int


@dataclasses.dataclass(frozen=True)
class LibrarySettings:
    floating: bool = False
    lends_to_other_libraries: bool = True
    hold_shelf_days: int | None = None
    fine_per_day_fen: int | None = None
    fine_cap_fen: int | None = None
    fine_block_fen: int | None = None


@dataclasses.dataclass(frozen=True)
class Rule:
    reader_category: str
    item_type: str
    loan_days: int
    max_renewals: int
    max_loans: int | None
    can_request: bool


@dataclasses.dataclass(frozen=True)
class Snapshot:
    generation: int
    loaded_at: float
    points: dict[str, Point]
    main_points: dict[str, str]  # library -> its main (else first) service point
    libraries: tuple[str, ...]  # institutions of kind library, sorted
    federation: Federation | None  # None: no row (the caller applies the built-in defaults)
    settings: dict[str, LibrarySettings]
    rules: dict[str, tuple[Rule, ...]]
    closed_dates: dict[str, frozenset[dt.date]]
    closed_weekdays: dict[str, frozenset[int]]

    def library(self, code: str) -> LibrarySettings | None:
        return self.settings.get(code)


_generation = 0
_snapshots: weakref.WeakKeyDictionary[Engine, Snapshot] = weakref.WeakKeyDictionary()
_listening = False


def generation() -> int:
    return _generation


def invalidate() -> None:
    """Drop every copy of this process (the next read reloads)."""
    global _generation
    _generation += 1


_REMEMBERED_TEXT = 4096  # longer texts (a many-row INSERT, a long IN list) are scanned each time, not kept


def _touches_cached(statement: str) -> bool:
    head = statement.lstrip()[:8].upper()
    if not head.startswith(_WRITES):
        return False
    if len(statement) > _REMEMBERED_TEXT:
        return _TABLE_NAMES.search(statement) is not None
    return _writes_cached_table(statement)


@functools.lru_cache(maxsize=512)  # the texts of the write statements the services compile, over and over
def _writes_cached_table(statement: str) -> bool:
    return _TABLE_NAMES.search(statement) is not None


def _on_execute(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
    if _touches_cached(statement):
        conn.info["circulation.cache_dirty"] = True
        invalidate()


def _on_end(conn: Any) -> None:
    try:
        dirty = conn.info.pop("circulation.cache_dirty", False)
    except exc.SQLAlchemyError:
        # the connection was invalidated inside its transaction (a statement cancelled mid-flight): what it wrote
        # is unknown, so the copies are dropped as if it had written
        dirty = True
    if dirty:
        invalidate()


def _listen() -> None:
    """Watch every engine of the process for writes to the cached tables (once)."""
    global _listening
    if _listening:
        return
    event.listen(Engine, "before_cursor_execute", _on_execute)
    event.listen(Engine, "commit", _on_end)
    event.listen(Engine, "rollback", _on_end)
    _listening = True


async def snapshot(session: AsyncSession) -> Snapshot:
    """The current copy for the session's database, reloaded when expired or invalidated."""
    _listen()
    engine = session.get_bind()
    found = _snapshots.get(engine)
    now = time.monotonic()
    if found is not None and found.generation == _generation and now - found.loaded_at < TTL_S:
        return found
    fresh = await _load(session, _generation, now)
    conn = await session.connection()
    if not conn.sync_connection.info.get("circulation.cache_dirty"):  # never share what this transaction changed
        _snapshots[engine] = fresh
    return fresh


async def _load(session: AsyncSession, gen: int, now: float) -> Snapshot:
    rows = (
        await session.execute(
            select(ServicePoint.code, Institution.code, Institution.kind, ServicePoint.is_main).join(
                Institution, ServicePoint.institution_id == Institution.id
            )
        )
    ).all()
    points = {code: Point(code, lib, kind, bool(main)) for code, lib, kind, main in rows}
    main_points: dict[str, str] = {}
    for p in sorted(points.values(), key=lambda p: (not p.is_main, p.code)):
        main_points.setdefault(p.library, p.code)
    libraries = tuple(
        sorted(
            (
                await session.execute(select(Institution.code).where(Institution.kind == InstitutionKind.LIBRARY))
            ).scalars()
        )
    )
    fed_table, lib_table, rule_table = FederationPolicy.__table__, LibraryPolicy.__table__, LoanPolicy.__table__
    fed_row = (await session.execute(select(fed_table).where(fed_table.c.id == "federation"))).first()
    fed = (
        Federation(
            fed_row.max_total_loans,
            fed_row.loan_days,
            fed_row.max_renewals,
            fed_row.overdue_block_days,
            fed_row.due_soon_days,
            fed_row.transit_overdue_days,
        )
        if fed_row is not None
        else None
    )
    settings = {
        r.library: LibrarySettings(
            bool(r.floating),
            r.lends_to_other_libraries is not False,
            r.hold_shelf_days,
            r.fine_per_day_fen,
            r.fine_cap_fen,
            r.fine_block_fen,
        )
        for r in (await session.execute(select(lib_table))).all()
    }
    rules: dict[str, list[Rule]] = {}
    for r in (await session.execute(select(rule_table))).all():
        rules.setdefault(r.library, []).append(
            Rule(r.reader_category, r.item_type, r.loan_days, r.max_renewals, r.max_loans, r.can_request)
        )
    dates: dict[str, set[dt.date]] = {}
    weekdays: dict[str, set[int]] = {}
    for lib, day, weekday in (
        await session.execute(select(ClosedDay.library, ClosedDay.date, ClosedDay.weekday))
    ).all():
        if day is not None:
            dates.setdefault(lib, set()).add(day)
        if weekday is not None:
            weekdays.setdefault(lib, set()).add(weekday)
    return Snapshot(
        generation=gen,
        loaded_at=now,
        points=points,
        main_points=main_points,
        libraries=libraries,
        federation=fed,
        settings=settings,
        rules={k: tuple(v) for k, v in rules.items()},
        closed_dates={k: frozenset(v) for k, v in dates.items()},
        closed_weekdays={k: frozenset(v) for k, v in weekdays.items()},
    )
