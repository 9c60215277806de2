"""A copy's circulation status, changed from outside the catalogue (circulation, a member's ILS feed).

The item row and a ``catalog.works_changed`` event for its work are written in the caller's unit of work, so the
change and the news of it commit together: the outbox relay (the in-process runner, or a Celery worker) then
rebuilds the work's search document, and ``available`` / ``available_at`` follow within moments. The status is
circulation's own: reloading the library's MARC file later keeps it (see ``store._store_items``).
"""

from __future__ import annotations

import dataclasses

from sqlalchemy import select

from federation.db import UnitOfWork, utcnow
from federation.errors import InvalidInput, NotFound
from library.catalog.models import ItemRow
from library.catalog.tasks import WORKS_CHANGED

# the vocabulary of holdings.normalise_status
STATUSES = frozenset(
    {
        "available",
        "on_loan",
        "lost",
        "missing",
        "withdrawn",
        "damaged",
        "not_for_loan",
        "in_transit",
        "on_order",
        "on_hold",
    }
)


class ItemNotFound(NotFound):
    code = "catalog.item_not_found"


class BadItemStatus(InvalidInput):
    code = "catalog.bad_item_status"


@dataclasses.dataclass(frozen=True)
class StatusChange:
    item_id: str
    work_id: str
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


async def set_item_status(uow: UnitOfWork, library: str, barcode: str, status: str) -> StatusChange:
    """Set the status of ``library``'s copy ``barcode``; emits ``catalog.works_changed`` when it changed.

    Raises ``ItemNotFound`` for an unknown copy and ``BadItemStatus`` for a status outside ``STATUSES``.
    The row is locked (PostgreSQL) until the caller commits, so concurrent changes of one copy serialise.
    """
    if status not in STATUSES:
        raise BadItemStatus(f"unknown item status {status!r}; known: {', '.join(sorted(STATUSES))}")
    q = (
        select(ItemRow)
        .where(ItemRow.library == library.upper(), ItemRow.barcode == barcode)
        .with_for_update()  # SQLite ignores it: its writer holds the database from BEGIN IMMEDIATE
    )
    item = (await uow.session.execute(q)).scalar_one_or_none()
    if item is None:
        raise ItemNotFound(f"{library.upper()} has no copy with barcode {barcode}")
    change = StatusChange(item.id, item.work_id, item.status, status)
    if change.changed:
        item.status = status
        item.updated_at = utcnow()
        await uow.session.flush()
        uow.emit(WORKS_CHANGED, work_ids=[item.work_id])
    return change
