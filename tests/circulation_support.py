"""Shared helpers of the circulation tests: catalogue copies to lend, and a snapshot of what circulation holds."""

from __future__ import annotations

from sqlalchemy import func, select

from federation.audit.models import AuditEntry
from federation.db import OutboxMessage
from library.catalog.models import ItemRow
from library.catalog.records import BibRecord, Item, Name
from library.catalog.store import Incoming, store_batch
from library.circulation.models import Borrower, ItemState, Loan, Reader, Transit


async def add_copies(
    svc, library: str, barcodes, *, title: str = "三体", location: str | None = None, item_type: str = "book"
) -> dict[str, ItemRow]:
    """A record of ``library`` holding one copy per barcode, shelved at ``location`` (default: the main desk)."""
    bib = BibRecord(
        control_number=f"circ-{library}-{title}-{barcodes[0]}",
        dialect="marc21",
        title=title,
        names=(Name("刘慈欣"),),
        year=2008,
        language="chi",
        items=tuple(
            Item(barcode=b, library=library, location=location or f"{library}-MAIN", item_type=item_type)
            for b in barcodes
        ),
    )
    async with svc.db.uow() as uow:
        await store_batch(uow.session, library, [Incoming(bib)], actor="test")
        await uow.commit()
    async with svc.db.reader() as s:
        rows = (
            await s.execute(select(ItemRow).where(ItemRow.library == library, ItemRow.barcode.in_(barcodes)))
        ).scalars()
        return {r.barcode: r for r in rows}


async def snapshot(svc) -> dict[str, object]:
    """Everything a refused request must leave as it was."""
    async with svc.db.reader() as s:

        async def count(model) -> int:
            return (await s.execute(select(func.count()).select_from(model))).scalar_one()

        return {
            "loans": sorted((await s.execute(select(Loan.id, Loan.state, Loan.renewals, Loan.due_at))).all()),
            "readers": sorted((await s.execute(select(Reader.id, Reader.active_loans))).all()),
            "borrowers": sorted((await s.execute(select(Borrower.person_id, Borrower.active_loans))).all()),
            "items": sorted((await s.execute(select(ItemState.item_id, ItemState.status, ItemState.version))).all()),
            "catalog": sorted((await s.execute(select(ItemRow.id, ItemRow.status))).all()),
            "transits": await count(Transit),
            "audit": await count(AuditEntry),
            "outbox": await count(OutboxMessage),
        }
