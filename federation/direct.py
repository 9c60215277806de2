"""Hot statements run by the driver itself, inside the unit of work's own transaction.

SQLAlchemy's execution layer costs about 0.1 ms of CPU per statement here (the session's bookkeeping, a greenlet
switch, the execution context, parameter and result processing), more than the driver takes to send the statement
and read its answer; a checkout sent twelve. A ``Statement`` is a Core statement compiled once per dialect and run
on the connection and in the transaction the session holds: on PostgreSQL as asyncpg's prepared statement (the
adapter's own cache), on SQLite as one trip to the connection's thread (``federation.sqlite_driver``). What
SQLAlchemy does around a statement is kept: the session's pending changes flushed first, the columns' bind and
result processors (``UTCDateTime``, JSON, booleans), Python-side INSERT defaults, ``before_cursor_execute``
listeners (the circulation cache watches writes through them), and errors raised as SQLAlchemy's (an
``IntegrityError`` is an ``IntegrityError``). On any other driver it is ``session.execute`` with the same answer.
``run_on`` runs one on a connection without a session (``Database.read_once``: the caller's account, read by itself
in autocommit mode at every request).

The statement's SQL is still written once, with SQLAlchemy, for both engines. An IN list whose values are given at
execution (an expanding bind parameter) is refused when the statement is first run: write those with
``session.execute``. IN lists of values fixed in the statement are expanded once.

This leans on private parts of SQLAlchemy's adapters (``_execute_mutex``, asyncpg's ``_transaction``,
``_start_transaction`` and ``_prepare``, aiosqlite's ``_execute`` and ``_conn``) and on the compiler's
``_bind_processors``, ``_result_columns`` and post-compile expansion: the versions are pinned in pyproject.toml and
``tests/integration/test_direct.py`` checks the behaviour relied on, on both engines.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import exc
from sqlalchemy.engine import Connection, CursorResult, Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.dml import Insert
from sqlalchemy.util import greenlet_spawn

from federation import sqlite_driver

_LINK = "twincity.direct_link"  # session.info: the transaction and the driver connection it runs on


@dataclasses.dataclass(frozen=True, slots=True)
class Answer:
    """What a statement returned: its rows (tuples, processed as SQLAlchemy would) and the rows it counted."""

    rows: Sequence[Sequence[Any]]
    rowcount: int

    def first(self) -> Sequence[Any] | None:
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def one(self) -> Sequence[Any]:
        if len(self.rows) != 1:
            raise (exc.NoResultFound if not self.rows else exc.MultipleResultsFound)(
                f"expected one row, got {len(self.rows)}"
            )
        return self.rows[0]


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    sql: str
    binds: tuple[tuple[str, Any, Any], ...]  # (name, default or _REQUIRED or a callable default, bind processor)
    results: tuple[Any, ...] | None  # result processors by column; None: no columns known before it runs
    processed: bool  # any result processor at all


_REQUIRED = object()


class _Default:
    """A column's Python-side INSERT default (``default=utcnow``), computed per execution."""

    __slots__ = ("fn",)

    def __init__(self, fn: Any) -> None:
        self.fn = fn


@dataclasses.dataclass(slots=True)
class _Link:
    sync: Connection
    adapted: Any  # SQLAlchemy's adapter of the driver's connection; None where statements go through SQLAlchemy
    send: Any = None  # this module's function sending a statement through that adapter


class Statement:
    """A Core statement run at the driver's cost where the driver allows it (see the module's text).

    ``row``: a named tuple type (``federation.db.row_tuple``) for rows read by attribute; plain tuples otherwise
    (SQLAlchemy's ``Row`` where the statement goes through SQLAlchemy)."""

    __slots__ = ("statement", "_plans", "_make")

    def __init__(self, statement: Executable, *, row: Any = None) -> None:
        self.statement = statement
        self._plans: dict[tuple[Dialect, tuple[str, ...] | None], _Plan] = {}
        self._make = row._make if row is not None else tuple

    async def run(self, session: AsyncSession, params: Mapping[str, Any] | None = None) -> Answer:
        """In the session's transaction, after its pending changes are flushed."""
        await _flush(session)
        link = await _link(session)
        return await self._run(link, params or {}, lambda: session.execute(self.statement, params))

    async def run_on(self, connection: AsyncConnection, params: Mapping[str, Any] | None = None) -> Answer:
        """On a connection without a session: in its transaction, or by itself in autocommit mode."""
        sync = connection.sync_connection
        assert sync is not None
        return await self._run(_link_of(sync), params or {}, lambda: connection.execute(self.statement, params))

    async def _run(self, link: _Link, params: Mapping[str, Any], through: Callable[[], Awaitable[Any]]) -> Answer:
        key = (link.sync.dialect, self._columns(params))
        plan = self._plans.get(key)
        if plan is None:  # made on every engine, so a statement the direct path refuses is refused on each
            plan = self._plans[key] = _plan(self.statement, key[0], key[1])
        args = _args(plan, params)
        if link.adapted is None:
            result = await through()
            if isinstance(result, CursorResult):
                return Answer(result.all() if result.returns_rows else [], result.rowcount)
            rows = result.all()  # a select of ORM entities' columns: the ORM's result
            return Answer(rows, len(rows))
        records, rowcount = await _trip(link, plan.sql, args, False)
        return _answer(plan, records, rowcount, self._make)

    async def run_many(self, session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
        """The statement once per row, in one round trip (every row names the same parameters)."""
        if not rows:
            return
        if len(rows) == 1:
            await self.run(session, rows[0])
            return
        await _flush(session)
        link = await _link(session)
        key = (link.sync.dialect, self._columns(rows[0]))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = _plan(self.statement, key[0], key[1])
        names = rows[0].keys()
        if any(row.keys() != names for row in rows):
            raise ValueError("run_many: every row names the same parameters")
        many = [_args(plan, row) for row in rows]
        if link.adapted is None:
            await session.execute(self.statement, list(rows))
            return
        await _trip(link, plan.sql, many, True)

    def _columns(self, params: Mapping[str, Any]) -> tuple[str, ...] | None:
        """An INSERT of values names its columns at execution: one plan per set of columns given."""
        s = self.statement
        return tuple(params) if isinstance(s, Insert) and s.select is None else None


def _args(plan: _Plan, params: Mapping[str, Any]) -> list[Any]:
    args = []
    for name, default, process in plan.binds:
        value = params.get(name, default)
        if value is _REQUIRED:  # refused alike on every engine, before anything is sent
            raise exc.InvalidRequestError(f"a value is required for bind parameter {name!r}")
        if value.__class__ is _Default:
            value = value.fn(None)
        args.append(value if process is None else process(value))
    return args


async def _flush(session: AsyncSession) -> None:
    sync = session.sync_session
    if sync.autoflush and (sync._new or sync._deleted or sync.identity_map._modified):
        await session.flush()  # as session.execute would: the statement sees what the session holds


def _plan(statement: Executable, dialect: Dialect, keys: tuple[str, ...] | None) -> _Plan:
    compiled = statement.compile(dialect=dialect, column_keys=list(keys) if keys is not None else None)
    if not compiled.positional:
        raise ValueError("direct statements need a driver with positional parameters")
    if compiled.update_prefetch:
        raise ValueError("an UPDATE with Python-side onupdate values: give them as parameters")
    defaults: dict[str, Any] = {}
    for column in compiled.insert_prefetch:
        d = column.default
        defaults[column.key] = _Default(d.arg) if d.is_callable else d.arg
    sql, order, processors = compiled.string, compiled.positiontup or (), compiled._bind_processors
    constants: dict[str, Any] = {}
    expanding = [compiled.binds[name] for name in order if compiled.binds[name].expanding]
    if expanding:
        # IN lists of values fixed in the statement (``state.in_((READY, TARGETED))``) are expanded once, here, as
        # SQLAlchemy expands them at every execution; an IN list given at execution cannot be
        unbound = [b.key for b in expanding if b.required or b.callable is not None]
        if unbound:
            raise ValueError(f"{', '.join(unbound)}: an expanding IN list; run this statement with session.execute")
        placeholders = {n: None for n in order if compiled.binds[n].required}
        state = compiled._process_parameters_for_postcompile(
            compiled.construct_params(placeholders), _populate_self=False
        )
        sql, order = state.statement, state.positiontup or ()
        processors = {**processors, **(state.processors or {})}
        constants = {n: state.parameters[n] for n in order if n not in compiled.binds}
    binds = []
    for name in order:
        bind = compiled.binds.get(name)
        if name in defaults:
            default = defaults[name]
        elif bind is None:
            default = constants[name]
        elif bind.callable is not None:
            default = _Default(lambda _ctx, fn=bind.callable: fn())
        elif bind.required:
            default = _REQUIRED
        else:
            default = bind.value
        binds.append((name, default, processors.get(name)))
    columns = compiled._result_columns
    results = tuple(c.type._cached_result_processor(dialect, None) for c in columns) if columns else None
    return _Plan(sql, tuple(binds), results, any(p is not None for p in results or ()))


async def _link(session: AsyncSession) -> _Link:
    """The connection of the session's current transaction and, where the direct path applies, its driver
    connection (remembered for the transaction's length)."""
    found = session.info.get(_LINK)
    tx = session.sync_session.get_transaction()
    if found is not None and tx is not None and found[0] is tx:
        return found[1]
    conn = await session.connection()
    sync = conn.sync_connection
    assert sync is not None
    link = _link_of(sync)
    session.info[_LINK] = (session.sync_session.get_transaction(), link)
    return link


def _link_of(sync: Connection) -> _Link:
    """The connection's adapter and the function that sends statements through it; none for a driver not known
    here."""
    adapted = sync.connection.dbapi_connection
    if sync.dialect.driver == "asyncpg" and hasattr(adapted, "_start_transaction"):
        return _Link(sync, adapted, _asyncpg_send)
    if isinstance(adapted, sqlite_driver.OneTripConnection):
        return _Link(sync, adapted, _sqlite_send)
    return _Link(sync, None)


async def _trip(link: _Link, sql: str, args: Any, many: bool) -> tuple[Sequence[Any], int]:
    """One statement (``many``: once per row of ``args``) on the link's connection: the listeners told first, the
    adapter's lock held as its own cursors hold it, a driver error raised as SQLAlchemy raises it."""
    sync, adapted = link.sync, link.adapted
    if sync._has_events or sync.engine._has_events:
        sync.dispatch.before_cursor_execute(sync, None, sql, args, None, many)
    async with adapted._execute_mutex:
        try:
            return await link.send(adapted, sync.dialect, sql, args, many)
        except Exception as error:  # noqa: BLE001 - every driver error is raised as SQLAlchemy raises it
            await greenlet_spawn(_raise, sync, adapted, error, sql, args)
            raise AssertionError("unreachable") from error


async def _asyncpg_send(adapted: Any, dialect: Dialect, sql: str, args: Any, many: bool) -> tuple[Sequence[Any], int]:
    """On PostgreSQL: the adapter's own prepared statement (its cache), in its transaction, begun here when this
    is the transaction's first statement; in autocommit mode the adapter begins none (``_start_transaction``
    returns at once), as for SQLAlchemy's own statements."""
    if adapted._transaction is None:
        await adapted._start_transaction()
    prepared, _ = await adapted._prepare(sql, dialect._invalidate_schema_cache_asof)
    if many:
        await prepared.executemany(args)
        return (), -1
    records = await prepared.fetch(*args)
    head, _, count = (prepared.get_statusmsg() or "").rpartition(" ")
    return records, int(count) if head and count.isdigit() else -1


async def _sqlite_send(adapted: Any, dialect: Dialect, sql: str, args: Any, many: bool) -> tuple[Sequence[Any], int]:
    """On SQLite: one trip to the connection's thread (``sqlite_driver``), in the transaction SQLAlchemy began
    (its BEGIN is sent when the session takes the connection); without one, sqlite3's autocommit."""
    conn = adapted._connection
    _, rowcount, _, rows = await conn._execute(sqlite_driver._run, conn._conn, sql, args, many)
    return rows, rowcount


def _answer(plan: _Plan, records: Sequence[Any], rowcount: int, make: Callable[[Any], Any]) -> Answer:
    if not plan.processed:  # also a text() statement's rows, whose columns SQLAlchemy does not know beforehand
        return Answer([make(r) for r in records], rowcount)
    results = plan.results
    rows = [make(v if p is None else p(v) for v, p in zip(r, results, strict=True)) for r in records]
    return Answer(rows, rowcount)


def _raise(sync: Connection, adapted: Any, error: Exception, sql: str, args: list[Any]) -> None:
    """Raise a driver error as SQLAlchemy's execution would: translated to the DB-API's class, wrapped in
    SQLAlchemy's, and the connection invalidated when the error says it is gone."""
    try:
        adapted._handle_exception(error)
    except Exception as translated:  # noqa: BLE001 - the DB-API error the adapter made of the driver's
        sync._handle_dbapi_exception(translated, sql, tuple(args), None, None)
    raise error
