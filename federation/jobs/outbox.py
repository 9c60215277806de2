"""The outbox relay: hands committed domain events to their handlers, at least once, in order of creation.

Handlers must be idempotent: a crash after a handler ran and before the row is
marked published runs it again.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from federation.db import OutboxMessage, utcnow
from federation.services import Services

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 10


async def relay(svc: Services, *, batch: int = 100) -> int:
    """Publish up to ``batch`` pending messages; returns how many were published."""
    published = 0
    async with svc.db.reader() as s:
        q = (
            select(OutboxMessage.id)
            .where(OutboxMessage.published_at.is_(None), OutboxMessage.attempts < MAX_ATTEMPTS)
            .order_by(OutboxMessage.created_at)
            .limit(batch)
        )
        ids = list((await s.execute(q)).scalars())
    for msg_id in ids:
        async with svc.db.uow() as uow:
            q = select(OutboxMessage).where(OutboxMessage.id == msg_id, OutboxMessage.published_at.is_(None))
            if not svc.db.is_sqlite:
                q = q.with_for_update(skip_locked=True)
            msg = (await uow.session.execute(q)).scalar_one_or_none()
            if msg is None:
                continue  # another relay has it
            try:
                for handler in svc.event_handlers.get(msg.topic, ()):
                    await handler(svc, dict(msg.payload))
            except Exception as e:  # noqa: BLE001 - recorded on the row and retried later
                msg.attempts += 1
                msg.last_error = f"{e.__class__.__name__}: {e}"[:2000]
                log.warning("outbox %s (%s) handler failed: %s", msg.id, msg.topic, e)
            else:
                msg.published_at = utcnow()
                published += 1
            await uow.commit()
    return published


async def pending(svc: Services) -> int:
    async with svc.db.reader() as s:
        from sqlalchemy import func

        q = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.published_at.is_(None))
        return int((await s.execute(q)).scalar_one())
