"""The outbox relay: hands committed domain events to their handlers, at least once.

Handlers must be idempotent: a crash after a handler ran and before the row is
marked published runs it again.

The relay works in passes: a pass takes up to ``BATCH`` of the oldest pending
events and marks them in one transaction, whatever their number. The events of
one topic reach their handlers in order of creation; a topic with a batch
handler (``Services.on_events``) gets all its events of a pass in one call, so
fifty copies lent in a second rebuild their works' search documents and commit
the index once, not fifty times.

No handler runs inside a write transaction on SQLite: SQLite has one writer, so
a handler that writes through its own unit of work would wait on the relay's
own lock. There, relays of one process take turns (a lock per database and
event loop) and the rows are marked afterwards, only if still unpublished. On
PostgreSQL the pass's rows stay locked (``FOR UPDATE SKIP LOCKED``) while their
handlers run, so concurrent relays in any number of processes take disjoint
passes and deliver each event once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any, NamedTuple

from sqlalchemy import Select, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from federation.db import OutboxMessage, utcnow
from federation.services import Services

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 10
# Events taken by one pass. A pass costs a few statements and one index commit whatever its size, and under load the
# relay shares its process's event loop with every request: with 100, twenty desks at ~180 operations/s (three
# events each) left 2,400 events pending after 20 s and the index 2.4 s behind (p50); with 500, none and 0.4 s.
BATCH = 500

_in_hand: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("outbox_in_hand", default=frozenset())
_sqlite_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)
_OUTBOX = OutboxMessage.__table__
_DUE = (_OUTBOX.c.published_at.is_(None), _OUTBOX.c.attempts < MAX_ATTEMPTS)


class _Message(NamedTuple):
    id: str
    topic: str
    payload: dict[str, Any]


def _oldest_due(batch: int) -> Select[Any]:
    return (
        select(_OUTBOX.c.id, _OUTBOX.c.topic, _OUTBOX.c.payload)
        .where(*_DUE)
        .order_by(_OUTBOX.c.created_at)
        .limit(batch)
    )


async def relay(svc: Services, *, batch: int = BATCH) -> int:
    """One pass: take up to ``batch`` of the oldest pending events, hand them to their handlers and mark them;
    returns how many were published. A pass costs a few statements whatever its size, and the events of a topic
    with a batch handler (``Services.on_events``) reach it in one call."""
    if svc.db.is_sqlite:
        return await _relay_sqlite(svc, batch)
    return await _relay_locked(svc, batch)


async def _relay_locked(svc: Services, batch: int) -> int:
    """PostgreSQL: the pass's rows stay locked (``FOR UPDATE SKIP LOCKED``) while their handlers run, so relays in
    any number of processes take disjoint passes and deliver each event once."""
    async with svc.db.uow() as uow:
        q = _oldest_due(batch).with_for_update(skip_locked=True)
        taken = [_Message(*row) for row in await uow.session.execute(q)]
        if not taken:
            return 0
        errors = await _handle(svc, taken)
        published = await _mark(uow.session, taken, errors)
        await uow.commit()
    return published


async def _relay_sqlite(svc: Services, batch: int) -> int:
    """SQLite: relays of one process take turns, the pass is read inside the turn, and its handlers run outside
    any write transaction; rows are marked afterwards, only where still unpublished. A handler that relays in
    turn (a job it runs inline) leaves the events of its own pass alone."""
    in_hand = _in_hand.get()
    async with _sqlite_turn(svc, nested=bool(in_hand)):
        q = _oldest_due(batch)
        if in_hand:
            q = q.where(_OUTBOX.c.id.notin_(in_hand))
        async with svc.db.reader() as s:
            taken = [_Message(*row) for row in await s.execute(q)]
        if not taken:
            return 0
        token = _in_hand.set(in_hand | {m.id for m in taken})
        try:
            errors = await _handle(svc, taken)
        finally:
            _in_hand.reset(token)
        async with svc.db.uow() as uow:
            published = await _mark(uow.session, taken, errors)
            await uow.commit()
    return published


@contextlib.asynccontextmanager
async def _sqlite_turn(svc: Services, *, nested: bool) -> AsyncIterator[None]:
    """This relay's turn on the database (a lock per database and event loop); a relay inside a handler is in
    its caller's turn already."""
    if nested:
        yield
        return
    locks = _sqlite_turns.setdefault(asyncio.get_running_loop(), {})
    async with locks.setdefault(svc.db.url, asyncio.Lock()):
        yield


def _failure(msg: _Message, e: Exception) -> str:
    log.warning("outbox %s (%s) handler failed: %s", msg.id, msg.topic, e)
    return f"{e.__class__.__name__}: {e}"[:2000]


async def _handle(svc: Services, taken: list[_Message]) -> dict[str, str]:
    """Run the handlers of every taken event; returns the error of each event a handler failed on.

    Topic by topic in order of first appearance, each topic's events in order of creation: the batch handlers
    with all of them at once, then each event's own handlers. When a batch handler fails, which event it failed
    on is unknown, so it is given each event alone: only the events it fails on alone fail. A failed event's
    remaining handlers wait for its retry (all its handlers run again then: they are idempotent).
    """
    errors: dict[str, str] = {}
    by_topic: dict[str, list[_Message]] = {}
    for msg in taken:
        by_topic.setdefault(msg.topic, []).append(msg)
    for topic, msgs in by_topic.items():
        for handle_many in svc.batch_handlers.get(topic, ()):
            todo = [m for m in msgs if m.id not in errors]
            if not todo:
                break
            try:
                await handle_many(svc, [dict(m.payload) for m in todo])
            except Exception:  # noqa: BLE001 - narrowed down below, event by event
                for msg in todo:
                    try:
                        await handle_many(svc, [dict(msg.payload)])
                    except Exception as e:  # noqa: BLE001 - recorded on the row and retried later
                        errors[msg.id] = _failure(msg, e)
        for msg in msgs:
            if msg.id in errors:
                continue
            try:
                for handler in svc.event_handlers.get(topic, ()):
                    await handler(svc, dict(msg.payload))
            except Exception as e:  # noqa: BLE001 - recorded on the row and retried later
                errors[msg.id] = _failure(msg, e)
    return errors


async def _mark(session: AsyncSession, taken: list[_Message], errors: dict[str, str]) -> int:
    """Mark the pass's events (only those still unpublished); returns how many were published now."""
    published = 0
    done = [m.id for m in taken if m.id not in errors]
    if done:
        q = update(_OUTBOX).where(_OUTBOX.c.id.in_(done), _OUTBOX.c.published_at.is_(None))
        published = (await session.execute(q.values(published_at=utcnow()))).rowcount
    for msg_id, error in errors.items():
        q = update(_OUTBOX).where(_OUTBOX.c.id == msg_id, _OUTBOX.c.published_at.is_(None))
        await session.execute(q.values(attempts=_OUTBOX.c.attempts + 1, last_error=error))
    return published


async def pending(svc: Services) -> int:
    async with svc.db.reader() as s:
        q = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
        return int((await s.execute(q)).scalar_one())
