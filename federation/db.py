"""Database access: one schema for SQLite (WAL, foreign keys) and PostgreSQL, and the unit of work.

A unit of work is one transaction. Domain events raised inside it are written
to the outbox table in that same transaction and handed to the doorbell only
after commit, so a crash between commit and publish loses nothing: the outbox
relay finds the row later.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import dataclasses
import datetime as dt
import functools
import json
import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson
from sqlalchemy import JSON, DateTime, MetaData, String, Table, TypeDecorator, event, insert
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.base import Executable

from federation import sqlite_driver
from federation.direct import Statement
from federation.settings import POOL_OVERFLOW, POOL_SIZE, Settings

log = logging.getLogger(__name__)

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def dialect_insert(session: AsyncSession, target: Any) -> Any:
    """``INSERT`` into ``target`` in the session's dialect, for its ``on_conflict_do_nothing`` and
    ``on_conflict_do_update`` (PostgreSQL and SQLite spell them alike; the generic insert has neither)."""
    return insert_in(session.get_bind().dialect.name, target)


def insert_in(dialect: str, target: Any) -> Any:
    """``dialect_insert`` for a dialect named ``postgresql`` or anything else (SQLite)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert_of
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert_of
    return dialect_insert_of(target)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class _Entropy(threading.local):
    """Random bytes drawn from the system in bulk, per thread. ``os.urandom`` for every id (a catalogue load
    makes five per record) was a system call, 0.4 of the id's 1 µs, and gave up the GIL each time."""

    def __init__(self) -> None:
        self.bytes = b""
        self.at = 0


_ENTROPY = _Entropy()
_DRAW = 10 * 256  # bytes per system call: 256 ids


def _forget_entropy() -> None:  # a forked child must not reuse the bytes its parent had in hand
    _ENTROPY.bytes, _ENTROPY.at = b"", 0


os.register_at_fork(after_in_child=_forget_entropy)

_VERSION_MASK = ~(0xF << 76) & ~(0x3 << 62)
_VERSION_BITS = 0x7 << 76 | 0x2 << 62  # version 7, RFC 9562 variant


def new_id() -> str:
    """A UUID version 7 in hex: 48 bits of Unix time in milliseconds, then 74 random bits (RFC 9562). Rows made
    together get neighbouring keys, so a large table's primary-key and reference indexes take new rows on the few
    pages at their right edge instead of on random pages all over them (a million FHIR resources: random keys
    made every insert read pages that were not cached). Built from integers, not ``uuid.UUID``: under half the
    cost."""
    e = _ENTROPY
    at = e.at
    if at + 10 > len(e.bytes):
        e.bytes, at = os.urandom(_DRAW), 0
    e.at = at + 10
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(e.bytes[at : at + 10])
    return (value & _VERSION_MASK | _VERSION_BITS).to_bytes(16).hex()


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Timezone-aware UTC timestamps on both engines (SQLite stores none)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


def id_column() -> Mapped[str]:
    return mapped_column(String(32), primary_key=True, default=new_id)


class OutboxMessage(Base):
    """A domain event committed with the change that raised it, waiting to be published."""

    __tablename__ = "outbox"

    id: Mapped[str] = id_column()
    topic: Mapped[str] = mapped_column(String(100), index=True)
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    published_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(String(2000))


@dataclasses.dataclass(frozen=True)
class DomainEvent:
    topic: str
    payload: dict[str, Any]


class Doorbell(Protocol):
    """Tells the workers there is something to do; carries ids only, never the work itself."""

    async def ring_outbox(self) -> None: ...

    async def ring_job(self, job_id: str) -> None: ...


class SilentDoorbell:
    """For tools that only write (migrations, the demo load): the workers find the rows on their own."""

    async def ring_outbox(self) -> None:
        return None

    async def ring_job(self, job_id: str) -> None:
        return None


class Database:
    """The engines and session factories of one database."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        pool: bool = True,
        pool_size: int = POOL_SIZE,
        pool_overflow: int = POOL_OVERFLOW,
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        sizes = (pool_size, pool_overflow) if pool else None
        self.engine = _make_engine(url, echo=echo, pool=sizes, immediate=True)
        # SQLite serialises writers; readers get their own engine so a read never takes the write lock.
        self.read_engine = _make_engine(url, echo=echo, pool=sizes, immediate=False) if self.is_sqlite else self.engine
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)
        # the same engine without transactions: every statement is consistent by itself, no BEGIN, no ROLLBACK
        unwrapped = {_NO_BEGIN: True} if self.is_sqlite else {"isolation_level": "AUTOCOMMIT"}
        self.statement_engine = self.read_engine.execution_options(**unwrapped)
        self.statement_sessions = async_sessionmaker(self.statement_engine, expire_on_commit=False)
        self.doorbell: Doorbell = SilentDoorbell()
        self._write_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def write_turn(self) -> asyncio.Lock | None:
        """SQLite's writers of this process queue here, in order, instead of spinning on its file lock.

        SQLite has one writer: a second ``BEGIN IMMEDIATE`` sleeps and retries (busy timeout) until the first
        commits, which under load means retry storms and latency spikes. Queued on an asyncio lock, each writer
        begins as soon as the previous one ends. Other processes (the CLI, a Celery worker) still meet the busy
        timeout. None on PostgreSQL: its writers run concurrently.
        """
        if not self.is_sqlite:
            return None
        loop = asyncio.get_running_loop()
        lock = self._write_turns.get(loop)
        if lock is None:
            lock = self._write_turns[loop] = asyncio.Lock()
        return lock

    @classmethod
    def from_settings(cls, settings: Settings, **kw: Any) -> Database:
        if settings.is_sqlite:
            settings.data_dir.mkdir(parents=True, exist_ok=True)
        kw.setdefault("pool_size", settings.database_pool_size)
        kw.setdefault("pool_overflow", settings.database_pool_overflow)
        return cls(settings.effective_database_url, **kw)

    def uow(self) -> UnitOfWork:
        return UnitOfWork(self)

    def reader(self, *, snapshot: bool = True) -> AsyncSession:
        """A session for reads only (``async with db.reader() as s``).

        ``snapshot=False``: no transaction around the reads, so no BEGIN and no ROLLBACK travel with them; each
        statement sees the database as it is when it runs. For a hot read path whose statements do not need to
        agree with each other beyond what each reads itself (``Database.read_once`` is the one-statement form).
        """
        return self.read_sessions() if snapshot else self.statement_sessions()

    async def read_once(self, statement: Executable | Statement, params: dict[str, Any] | None = None) -> list[Any]:
        """The rows of one statement, run outside any transaction: a single statement is consistent by itself, so
        no BEGIN and no ROLLBACK travel with it and no ORM session is made. For the reads every request makes (the
        caller's account or API key); anything reading twice and wanting one snapshot uses ``reader()``. A
        ``federation.direct.Statement`` runs at the driver's cost where it can."""
        async with self.statement_engine.connect() as conn:
            if isinstance(statement, Statement):
                return list((await statement.run_on(conn, params)).rows)
            return list((await conn.execute(statement, params)).all())

    async def ping(self) -> None:
        async with self.read_engine.connect() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()


def row_tuple(name: str, columns: Sequence[Any]) -> type[tuple[Any, ...]]:
    """A named tuple type for the rows of ``select(*columns)``, for pages read many times over (judged, sorted,
    rendered). SQLAlchemy's ``Row`` finds an attribute by name in Python code, about a microsecond each; a named
    tuple's attribute is a C slot read. Convert with ``T._make(row)``."""
    return collections.namedtuple(name, [c.key for c in columns])  # type: ignore[misc]


def json_loads(text: str | bytes) -> Any:
    """JSON columns are read with orjson (a doctor's page decodes fifty FHIR bodies); the standard library reads
    what orjson refuses but ``json.dumps`` may have written (NaN, Infinity, integers beyond 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


_ORJSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


async def insert_many(session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """``session.execute(insert(table), rows)`` at the driver's cost, for big batches of plain rows.

    SQLAlchemy's executemany runs every value of every row through its parameter processing in Python (about
    6 µs a row of ten columns here, six times what the driver takes to insert it). This compiles the statement
    once per table and column set, runs each column's bind processor down the column (a value repeated down it,
    such as the batch's timestamp, once) and hands the driver tuples. Every row names the same columns; a column
    left out must have no Python-side default (nothing fills those in here). Where the driver takes named
    parameters, it is ``session.execute`` after all.
    """
    if not rows:
        return
    connection = await session.connection()
    keys = tuple(rows[0])
    plan = _insert_plan(connection.dialect, table, keys)
    if plan is None:
        await session.execute(insert(table), list(rows))
        return
    sql, order, processors = plan
    width = len(keys)
    if any(len(row) != width for row in rows):
        raise ValueError(f"insert_many into {table.name}: every row names the same columns, {', '.join(keys)}")
    columns = []
    for key, process in zip(order, processors, strict=True):
        column = [row[key] for row in rows]
        if process is not None:
            last: Any = _NOTHING
            done: Any = None
            for i, value in enumerate(column):
                if value is not last:
                    last, done = value, process(value)
                column[i] = done
        columns.append(column)
    await connection.exec_driver_sql(sql, list(zip(*columns, strict=True)))


_NOTHING = object()


@functools.lru_cache(maxsize=256)
def _insert_plan(
    dialect: Dialect, table: Table, keys: tuple[str, ...]
) -> tuple[str, tuple[str, ...], tuple[Any, ...]] | None:
    """The INSERT of ``keys`` into ``table`` for ``dialect``, the keys in the order of its parameters (the table's
    column order, whatever the order of the rows' keys) and each one's bind processor; None for a driver that takes
    named parameters."""
    unknown = [k for k in keys if k not in table.c]
    if unknown:
        raise ValueError(f"insert_many into {table.name}: no column {', '.join(unknown)}")
    defaulted = [c.key for c in table.c if c.key not in keys and c.default is not None]
    if defaulted:
        raise ValueError(f"insert_many into {table.name}: give {', '.join(defaulted)} (Python-side defaults)")
    compiled = insert(table).compile(dialect=dialect, column_keys=list(keys))
    order = tuple(compiled.positiontup or ())
    if not compiled.positional or sorted(order) != sorted(keys):
        return None
    processors = tuple(table.c[k].type.dialect_impl(dialect).bind_processor(dialect) for k in order)
    return compiled.string, order, processors


class JSONText(str):
    """A JSON column's value serialised already (by a worker process, say): ``json_dumps`` writes it as it is.
    Whoever makes one vouches that it is JSON, with no NaN or infinity."""

    __slots__ = ()


def json_dumps(value: Any) -> str:
    """JSON columns are written with orjson (a FHIR result's body, two or three times faster than the standard
    library). orjson writes NaN and infinities as null where the standard library keeps them, and refuses integers
    beyond 64 bits: a value holding a NaN or an infinity, or that orjson refuses, is written by the standard
    library, so every value reads back as it did before; what the standard library refuses (a datetime, a
    dataclass) is still refused. A null in orjson's text is most often a None: only then is the value walked."""
    if type(value) is JSONText:
        return str.__str__(value)
    try:
        text = orjson.dumps(value, option=_ORJSON_OPTIONS)
    except TypeError:
        return json.dumps(value)
    if b"null" in text and not _all_finite(value, keys=b'"null":' in text):  # a None, most often; or a NaN
        return json.dumps(value)
    return text.decode()


def _all_finite(value: Any, *, keys: bool) -> bool:
    """No NaN or infinity anywhere in this JSON value (``keys``: in its keys too). A loop, not recursion: a third
    of the cost of encoding the value again with the standard library. orjson refuses float subclasses, so none
    arrive here."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind in _LEAVES:
            continue
        if kind is float:
            if not math.isfinite(item):
                return False
        elif kind is dict or isinstance(item, dict):
            stack.extend(item.values())
            if keys:
                stack.extend(item)
        elif kind is list or kind is tuple or isinstance(item, (list, tuple)):
            stack.extend(item)
    return True


_LEAVES = frozenset({str, int, bool, type(None)})


def _in_memory(url: str) -> bool:
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and (
        parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory"
    )


def _make_engine(url: str, *, echo: bool, pool: tuple[int, int] | None, immediate: bool) -> AsyncEngine:
    """``pool``: (connections kept, more opened at a peak); None: a connection per use (tools, tests)."""
    kwargs: dict[str, Any] = {"echo": echo, "json_serializer": json_dumps, "json_deserializer": json_loads}
    if pool is None:
        kwargs["poolclass"] = NullPool
    elif not _in_memory(url):  # an in-memory SQLite database is one connection (SQLAlchemy's StaticPool)
        # the most recently used connection first: under load the same few stay busy, the rest idle (and are
        # checked when they are used again, below). Connections are opened as they are first needed.
        kwargs.update(pool_size=pool[0], max_overflow=pool[1], pool_use_lifo=True)
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30}
        if url.startswith("sqlite+aiosqlite"):
            kwargs["module"] = sqlite_driver.dbapi()  # one trip to SQLite's thread per statement
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        _sqlite_setup(engine, immediate=immediate)
    elif pool is not None:
        _ping_when_idle(engine)
    return engine


PING_AFTER_IDLE_S = 10.0
_IDLE_SINCE = "twincity_idle_since"


def _ping_when_idle(engine: AsyncEngine) -> None:
    """A pooled connection that sat idle for ``PING_AFTER_IDLE_S`` is pinged before it is handed out, and replaced
    if the server has ended it (a restart, an idle timeout). SQLAlchemy's ``pool_pre_ping`` pings at every
    checkout: a round trip before every request's first statement, for connections that were in use a moment ago.
    A connection lost while in use fails that request either way, and the pool then drops the others."""

    @event.listens_for(engine.sync_engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info[_IDLE_SINCE] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return  # just connected, or back from use a moment ago
        try:
            engine.sync_engine.dialect.do_ping(dbapi_conn)
        except Exception as e:  # noqa: BLE001 - whatever the driver says, this connection is not to be used
            raise DisconnectionError(f"a pooled connection idle for {time.monotonic() - since:.0f}s is gone") from e


_NO_BEGIN = "twincity_no_begin"  # an execution option: this SQLite connection runs without our BEGIN


def _sqlite_setup(engine: AsyncEngine, *, immediate: bool) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the driver so BEGIN is ours to emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA busy_timeout=30000")
        # 32 MiB of page cache (the default is 2): a million stored results make indexes of tens of MiB, and an
        # insert or a page read that misses the cache reads the file again. Only what is used is allocated.
        cur.execute("PRAGMA cache_size=-32768")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(_NO_BEGIN):
            return  # ``Database.read_once``: one statement in the driver's autocommit mode
        # A writer takes the lock at BEGIN: a deferred transaction that reads and then
        # writes fails with SQLITE_BUSY_SNAPSHOT when another writer got in between.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


AfterCommit = Callable[[], Any]
_OUTBOX_INSERT = Statement(insert(OutboxMessage.__table__))
WRITE_TURN_TIMEOUT_S = 30.0  # as long as SQLite's busy timeout: a writer waits no longer for its turn than for the lock
_writing: contextvars.ContextVar[bool] = contextvars.ContextVar("uow_writing", default=False)


class UnitOfWork:
    """One transaction: ``async with db.uow() as uow: ...; await uow.commit()``.

    Leaving the block without ``commit()`` rolls back.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.session: AsyncSession
        self._events: list[DomainEvent] = []
        self._sent = 0  # how many of the events are written to the outbox
        self._jobs: list[str] = []
        self._committed = False
        self._before_commit: list[Callable[[], Awaitable[None]]] = []
        self._on_end: list[Callable[[], None]] = []
        self.deferred: dict[str, Any] = {}
        self._turn: asyncio.Lock | None = None
        self._writing: contextvars.Token[bool]

    async def __aenter__(self) -> UnitOfWork:
        turn = self.db.write_turn()
        if turn is not None and not _writing.get():  # a unit of work inside one keeps SQLite's own locking
            try:
                async with asyncio.timeout(WRITE_TURN_TIMEOUT_S):
                    await turn.acquire()
            except TimeoutError:
                raise TimeoutError(f"no write turn on the database within {WRITE_TURN_TIMEOUT_S:.0f}s") from None
            self._turn, self._writing = turn, _writing.set(True)
        self.session = self.db.sessions()
        try:
            await self.session.begin()
        except BaseException:
            await self.session.close()
            self._end_turn()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            if not self._committed:
                await self.session.rollback()
        finally:
            try:
                await self.session.close()
            finally:
                self._end_turn()
                hooks, self._on_end = self._on_end, []
                for hook in hooks:
                    hook()

    def _end_turn(self) -> None:
        if self._turn is not None:
            _writing.reset(self._writing)
            self._turn.release()
            self._turn = None

    def emit(self, topic: str, **payload: Any) -> None:
        """Record a domain event; it is stored with this transaction and published after it."""
        self._events.append(DomainEvent(topic, payload))

    def job_enqueued(self, job_id: str) -> None:
        self._jobs.append(job_id)

    def before_commit(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` inside the transaction just before it commits (once, however often it is added)."""
        if hook not in self._before_commit:
            self._before_commit.append(hook)

    def on_end(self, hook: Callable[[], None]) -> None:
        """Call ``hook`` once the transaction has ended, committed or not (its locks are released then)."""
        self._on_end.append(hook)

    async def commit(self) -> None:
        if self._before_commit:
            # the hooks last, right before COMMIT: the audit chain's lock (PostgreSQL) is then held for its own
            # two statements and the commit, not also for the session's pending changes; the outbox rows go with
            # the lock's statement (``unsent_events``), or after the hooks
            await self.session.flush()
            for hook in self._before_commit:
                await hook()
        await self._write_events()  # what no hook took, and what a hook emitted
        await self.session.commit()
        self._committed = True
        events, self._events, self._sent = self._events, [], 0
        jobs, self._jobs = self._jobs, []
        # The change is durable now: a doorbell that cannot ring (broker down) costs a delay, not an error,
        # since the workers also poll for the rows. Raising here would tell the caller a committed change failed.
        if events:
            await self._ring(self.db.doorbell.ring_outbox)
        for job_id in jobs:
            await self._ring(self.db.doorbell.ring_job, job_id)

    def unsent_events(self) -> list[DomainEvent]:
        """The events not yet written to the outbox, handed to a statement that writes them (the audit chain's lock
        on PostgreSQL carries them: one round trip less); they count as written from now on."""
        unsent, self._sent = self._events[self._sent :], len(self._events)
        return unsent

    async def _write_events(self) -> None:
        """The outbox rows of the events not yet written: one multi-row INSERT, without the ORM's bookkeeping."""
        unsent = self.unsent_events()
        if unsent:
            rows = [{"id": new_id(), "topic": ev.topic, "payload": ev.payload} for ev in unsent]
            await _OUTBOX_INSERT.run_many(self.session, rows)

    @staticmethod
    async def _ring(ring: Callable[..., Awaitable[None]], *args: Any) -> None:
        try:
            await ring(*args)
        except Exception:
            log.warning(
                "doorbell %s failed after commit; the workers will find the rows by polling",
                ring.__name__,
                exc_info=True,
            )
