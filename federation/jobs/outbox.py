"""The outbox relay: hands committed domain events to their handlers, at least once, in order of creation.

Handlers must be idempotent: a crash after a handler ran and before the row is
marked published runs it again.

No handler runs inside a write transaction on SQLite: SQLite has one writer, so
a handler that writes through its own unit of work would wait on the relay's
own lock. There, relays of one process take turns (a lock per database and
event loop) and the row is marked afterwards, only if still unpublished. On
PostgreSQL the row stays locked (``FOR UPDATE SKIP LOCKED``) while its handlers
run, so concurrent relays in any number of processes deliver it once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import func, select, update

from federation.db import OutboxMessage, utcnow
from federation.services import Services

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 10

_in_hand: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("outbox_in_hand", default=frozenset())
_sqlite_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


async def relay(svc: Services, *, batch: int = 100) -> int:
    """Publish up to ``batch`` pending messages; returns how many were published."""
    async with svc.db.reader() as s:
        q = (
            select(OutboxMessage.id)
            .where(OutboxMessage.published_at.is_(None), OutboxMessage.attempts < MAX_ATTEMPTS)
            .order_by(OutboxMessage.created_at)
            .limit(batch)
        )
        ids = list((await s.execute(q)).scalars())
    deliver = _deliver_sqlite if svc.db.is_sqlite else _deliver_locked
    published = 0
    for msg_id in ids:
        published += await deliver(svc, msg_id)
    return published


async def _handle(svc: Services, msg_id: str, topic: str, payload: dict[str, Any]) -> str | None:
    """Run every handler of the topic; returns the error, if one failed."""
    try:
        for handler in svc.event_handlers.get(topic, ()):
            await handler(svc, dict(payload))
    except Exception as e:  # noqa: BLE001 - recorded on the row and retried later
        log.warning("outbox %s (%s) handler failed: %s", msg_id, topic, e)
        return f"{e.__class__.__name__}: {e}"[:2000]
    return None


async def _deliver_locked(svc: Services, msg_id: str) -> bool:
    async with svc.db.uow() as uow:
        q = (
            select(OutboxMessage)
            .where(OutboxMessage.id == msg_id, OutboxMessage.published_at.is_(None))
            .with_for_update(skip_locked=True)
        )
        msg = (await uow.session.execute(q)).scalar_one_or_none()
        if msg is None:
            return False  # published meanwhile, or another relay has it
        error = await _handle(svc, msg.id, msg.topic, msg.payload)
        if error is None:
            msg.published_at = utcnow()
        else:
            msg.attempts += 1
            msg.last_error = error
        await uow.commit()
    return error is None


@contextlib.asynccontextmanager
async def _sqlite_turn(svc: Services, msg_id: str) -> AsyncIterator[bool]:
    """This relay's turn to deliver ``msg_id``; yields False when the message is already in hand.

    A handler that relays (say, a job it runs inline) is inside the turn already: it goes on
    without the lock and leaves the messages of its callers alone.
    """
    in_hand = _in_hand.get()
    if msg_id in in_hand:
        yield False
        return
    token = _in_hand.set(in_hand | {msg_id})
    try:
        if in_hand:  # already inside this relay's turn
            yield True
        else:
            locks = _sqlite_turns.setdefault(asyncio.get_running_loop(), {})
            async with locks.setdefault(svc.db.url, asyncio.Lock()):
                yield True
    finally:
        _in_hand.reset(token)


async def _deliver_sqlite(svc: Services, msg_id: str) -> bool:
    async with _sqlite_turn(svc, msg_id) as mine:
        if not mine:
            return False
        async with svc.db.reader() as s:
            q = select(OutboxMessage).where(OutboxMessage.id == msg_id, OutboxMessage.published_at.is_(None))
            msg = (await s.execute(q)).scalar_one_or_none()
        if msg is None:
            return False
        error = await _handle(svc, msg.id, msg.topic, msg.payload)
        mark = update(OutboxMessage).where(OutboxMessage.id == msg_id, OutboxMessage.published_at.is_(None))
        if error is None:
            mark = mark.values(published_at=utcnow())
        else:
            mark = mark.values(attempts=OutboxMessage.attempts + 1, last_error=error)
        async with svc.db.uow() as uow:
            res = await uow.session.execute(mark)
            await uow.commit()
        return error is None and res.rowcount == 1


async def pending(svc: Services) -> int:
    async with svc.db.reader() as s:
        q = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
        return int((await s.execute(q)).scalar_one())
