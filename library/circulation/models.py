"""Circulation's tables: readers per library, item circulation state, loans, transits, policies, idempotency keys.

Items are the catalogue's (``catalog_items``); circulation keeps its own row per copy that ever circulated
(``circ_item_state``: status, where the copy is now, a version) and mirrors the status onto the catalogue's item
so the search index follows. No foreign key points into the catalogue: a record reload may drop an item whose
loan history circulation keeps (loans carry the barcode and owning library for that reason).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, CheckConstraint, Date, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from federation.db import Base, id_column, utcnow

ANY = "*"  # a policy row's wildcard for reader category or item type


class Reader(Base):
    """A person's registration at one library, made on first use; ``active_loans`` counts without COUNT(*)."""

    __tablename__ = "circ_readers"
    __table_args__ = (UniqueConstraint("person_id", "library"),)

    id: Mapped[str] = id_column()
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)
    library: Mapped[str] = mapped_column(String(32))
    category: Mapped[str] = mapped_column(String(10))  # adult, child, senior
    blocked: Mapped[bool] = mapped_column(Boolean, default=False)
    block_reason: Mapped[str | None] = mapped_column(String(300))
    active_loans: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Borrower(Base):
    """A person's loans across every library, for the federation-wide limit (one row per person)."""

    __tablename__ = "circ_borrowers"

    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), primary_key=True)
    active_loans: Mapped[int] = mapped_column(Integer, default=0)
    # a federation-wide block (by an administrator or a librarian): no checkout, renewal or request anywhere
    blocked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    block_reason: Mapped[str | None] = mapped_column(String(300))


class ItemState(Base):
    """Where a copy is in circulation. Changed only by a conditional UPDATE on ``status`` (see ``states``)."""

    __tablename__ = "circ_item_state"

    item_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    library: Mapped[str] = mapped_column(String(32))  # the owner
    barcode: Mapped[str] = mapped_column(String(64))
    work_id: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(20))
    current_library: Mapped[str | None] = mapped_column(String(32))
    current_service_point: Mapped[str | None] = mapped_column(String(40))
    version: Mapped[int] = mapped_column(Integer, default=1)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Loan(Base):
    __tablename__ = "circ_loans"
    __table_args__ = (
        # the second guard of the invariant: one active loan per item, whatever the code above does
        Index(
            "uq_circ_loans_active_item",
            "item_id",
            unique=True,
            sqlite_where=text("state = 'active'"),
            postgresql_where=text("state = 'active'"),
        ),
        Index("ix_circ_loans_person_state", "person_id", "state"),
    )

    id: Mapped[str] = id_column()
    item_id: Mapped[str] = mapped_column(String(32), index=True)
    barcode: Mapped[str] = mapped_column(String(64))
    owner_library: Mapped[str] = mapped_column(String(32))
    library: Mapped[str] = mapped_column(String(32))  # the lending library
    reader_id: Mapped[str] = mapped_column(ForeignKey("circ_readers.id"), index=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"))
    state: Mapped[str] = mapped_column(String(12), default="active")
    checkout_service_point: Mapped[str] = mapped_column(String(40))
    checked_out_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    due_at: Mapped[dt.datetime]
    renewals: Mapped[int] = mapped_column(Integer, default=0)
    returned_at: Mapped[dt.datetime | None]
    checkin_service_point: Mapped[str | None] = mapped_column(String(40))
    version: Mapped[int] = mapped_column(Integer, default=1)


class Transit(Base):
    __tablename__ = "circ_transits"
    __table_args__ = (
        Index(
            "uq_circ_transits_open_item",
            "item_id",
            unique=True,
            sqlite_where=text("state = 'in_transit'"),
            postgresql_where=text("state = 'in_transit'"),
        ),
        Index("ix_circ_transits_to_state", "to_service_point", "state"),
        Index("ix_circ_transits_from_state", "from_service_point", "state"),
    )

    id: Mapped[str] = id_column()
    item_id: Mapped[str] = mapped_column(String(32))
    barcode: Mapped[str] = mapped_column(String(64))
    loan_id: Mapped[str | None] = mapped_column(ForeignKey("circ_loans.id"))
    reason: Mapped[str] = mapped_column(String(20))  # return_home; later: hold
    from_library: Mapped[str] = mapped_column(String(32))
    from_service_point: Mapped[str] = mapped_column(String(40))
    to_library: Mapped[str] = mapped_column(String(32))
    to_service_point: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(12), default="in_transit")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    received_at: Mapped[dt.datetime | None]
    received_service_point: Mapped[str | None] = mapped_column(String(40))


class LoanPolicy(Base):
    """One lending library's rule for a reader category and item type (``*`` for any); the most specific wins."""

    __tablename__ = "circ_loan_policies"
    __table_args__ = (UniqueConstraint("library", "reader_category", "item_type"),)

    id: Mapped[str] = id_column()
    library: Mapped[str] = mapped_column(String(32))
    reader_category: Mapped[str] = mapped_column(String(10), default=ANY)
    item_type: Mapped[str] = mapped_column(String(32), default=ANY)
    loan_days: Mapped[int] = mapped_column(Integer)
    max_renewals: Mapped[int] = mapped_column(Integer)
    max_loans: Mapped[int | None] = mapped_column(Integer)  # at this library; None: only the federation's limit
    can_request: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))


class LibraryPolicy(Base):
    """A library's collection-wide settings: whether its copies float (stay where they are returned)."""

    __tablename__ = "circ_library_policies"

    library: Mapped[str] = mapped_column(String(32), primary_key=True)
    floating: Mapped[bool] = mapped_column(Boolean, default=False)
    # whether its copies may fill requests picked up at another library
    lends_to_other_libraries: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    hold_shelf_days: Mapped[int | None] = mapped_column(Integer)  # None: the built-in 7 days
    # fines, in fen (0.01 yuan); None: the library charges none
    fine_per_day_fen: Mapped[int | None] = mapped_column(Integer)
    fine_cap_fen: Mapped[int | None] = mapped_column(Integer)  # per loan
    fine_block_fen: Mapped[int | None] = mapped_column(Integer)  # open fines above this block checkouts here


class Request(Base):
    """A reader's request (hold) for a work (any copy) or one copy, picked up at a service point.

    ``item_id`` is the copy targeted for it (on a pull list, travelling, on the hold shelf); ``requested_item_id``
    is set for a request of one particular copy. Changed only by conditional UPDATEs on ``state`` (``states``).
    """

    __tablename__ = "circ_requests"
    __table_args__ = (
        # a copy serves one request at a time, whatever the code above does
        Index(
            "uq_circ_requests_open_item",
            "item_id",
            unique=True,
            sqlite_where=text("state IN ('targeted', 'in_transit', 'ready')"),
            postgresql_where=text("state IN ('targeted', 'in_transit', 'ready')"),
        ),
        Index("ix_circ_requests_work_state", "work_id", "state"),
        Index("ix_circ_requests_item_state", "item_id", "state"),
        Index("ix_circ_requests_person_state", "person_id", "state"),
        Index("ix_circ_requests_state_hold_until", "state", "hold_until"),
    )

    id: Mapped[str] = id_column()
    work_id: Mapped[str] = mapped_column(String(32))
    requested_item_id: Mapped[str | None] = mapped_column(String(32))
    item_id: Mapped[str | None] = mapped_column(String(32))
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"))
    reader_id: Mapped[str] = mapped_column(ForeignKey("circ_readers.id"))  # at the pickup library
    pickup_library: Mapped[str] = mapped_column(String(32))
    pickup_service_point: Mapped[str] = mapped_column(String(40))
    state: Mapped[str] = mapped_column(String(12), default="queued")
    transit_id: Mapped[str | None] = mapped_column(String(32))
    loan_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    targeted_at: Mapped[dt.datetime | None]
    ready_at: Mapped[dt.datetime | None]
    hold_until: Mapped[dt.datetime | None]
    closed_at: Mapped[dt.datetime | None]  # fulfilled, cancelled or expired
    version: Mapped[int] = mapped_column(Integer, default=1)


class FederationPolicy(Base):
    """The federation-wide limits (one row, id ``federation``) and the defaults where no library rule matches."""

    __tablename__ = "circ_federation_policy"

    id: Mapped[str] = mapped_column(String(20), primary_key=True, default="federation")
    max_total_loans: Mapped[int] = mapped_column(Integer, default=8)
    loan_days: Mapped[int] = mapped_column(Integer, default=30)
    max_renewals: Mapped[int] = mapped_column(Integer, default=1)
    overdue_block_days: Mapped[int | None] = mapped_column(Integer)  # a loan this late blocks checkouts; None: never
    due_soon_days: Mapped[int] = mapped_column(Integer, default=3, server_default=text("3"))
    transit_overdue_days: Mapped[int] = mapped_column(Integer, default=7, server_default=text("7"))


class ClosedDay(Base):
    """A day a library is closed: one date, or a weekday every week (0 Monday .. 6 Sunday), in China time."""

    __tablename__ = "circ_closed_days"
    __table_args__ = (
        UniqueConstraint("library", "date", name="uq_circ_closed_days_library_date"),
        UniqueConstraint("library", "weekday", name="uq_circ_closed_days_library_weekday"),
        CheckConstraint("(date IS NULL) <> (weekday IS NULL)", name="one_of_date_weekday"),
    )

    id: Mapped[str] = id_column()
    library: Mapped[str] = mapped_column(String(32), index=True)
    date: Mapped[dt.date | None] = mapped_column(Date)
    weekday: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(String(200))


class Notice(Base):
    """A time-driven notice raised once: one row per (loan or transit, kind, day) makes the scan idempotent."""

    __tablename__ = "circ_notices"
    __table_args__ = (UniqueConstraint("subject_id", "kind", "day", name="uq_circ_notices_subject_kind_day"),)

    id: Mapped[str] = id_column()
    subject_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(20))  # due_soon, overdue, transit_overdue
    day: Mapped[dt.date] = mapped_column(Date)
    person_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Fine(Base):
    """A fine for an overdue loan, fixed at check-in; paid or waived by the lending library's staff."""

    __tablename__ = "circ_fines"
    __table_args__ = (Index("ix_circ_fines_person_library_state", "person_id", "library", "state"),)

    id: Mapped[str] = id_column()
    loan_id: Mapped[str] = mapped_column(ForeignKey("circ_loans.id"), unique=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"))
    library: Mapped[str] = mapped_column(String(32))  # the lending library
    days: Mapped[int] = mapped_column(Integer)  # open days late
    amount_fen: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(10), default="open")  # open, paid, waived
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    settled_at: Mapped[dt.datetime | None]
    settled_by: Mapped[str | None] = mapped_column(String(120))
    note: Mapped[str | None] = mapped_column(String(300))


class IdempotencyKey(Base):
    """A write's first answer, stored in the transaction that made the change, replayed for a repeated key."""

    __tablename__ = "circ_idempotency_keys"

    principal: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer, default=0)
    body: Mapped[dict[str, Any] | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
