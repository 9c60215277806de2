"""Catalogue tables: each library's records, the works they cluster into, and the items libraries hold."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from federation.db import Base, id_column, utcnow


class Work(Base):
    """One book as the reader thinks of it: every library's record of it, clustered."""

    __tablename__ = "catalog_works"

    id: Mapped[str] = id_column()
    title: Mapped[str] = mapped_column(String(500))
    first_author: Mapped[str | None] = mapped_column(String(300))
    year: Mapped[int | None] = mapped_column(Integer)
    match_key: Mapped[str] = mapped_column(String(300), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WorkIsbn(Base):
    """ISBN-13 → work: the first clustering rule."""

    __tablename__ = "catalog_work_isbns"

    isbn: Mapped[str] = mapped_column(String(13), primary_key=True)
    work_id: Mapped[str] = mapped_column(ForeignKey("catalog_works.id"), index=True)


class BibRecordRow(Base):
    """A member library's record, keyed by library + control number; ``data`` is the parsed BibRecord."""

    __tablename__ = "catalog_records"
    __table_args__ = (UniqueConstraint("library", "control_number"),)

    id: Mapped[str] = id_column()
    library: Mapped[str] = mapped_column(String(32))
    control_number: Mapped[str] = mapped_column(String(64))
    dialect: Mapped[str] = mapped_column(String(10))
    version: Mapped[str | None] = mapped_column(String(32))
    content_hash: Mapped[str] = mapped_column(String(40))
    data: Mapped[dict[str, Any]]
    marc: Mapped[bytes | None] = mapped_column(LargeBinary)  # ISO 2709, UTF-8, for export
    work_id: Mapped[str] = mapped_column(ForeignKey("catalog_works.id"), index=True)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)  # split by an administrator: stays put on reload
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class ItemRow(Base):
    """A physical copy. Descriptive fields come from the catalogue; ``status`` belongs to circulation."""

    __tablename__ = "catalog_items"
    __table_args__ = (UniqueConstraint("library", "barcode"), Index("ix_catalog_items_barcode", "barcode"))

    id: Mapped[str] = id_column()
    library: Mapped[str] = mapped_column(String(32))
    barcode: Mapped[str] = mapped_column(String(64))
    record_id: Mapped[str] = mapped_column(ForeignKey("catalog_records.id"), index=True)
    work_id: Mapped[str] = mapped_column(ForeignKey("catalog_works.id"), index=True)
    location: Mapped[str | None] = mapped_column(String(64))
    call_number: Mapped[str | None] = mapped_column(String(100))
    item_type: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(20), default="available")
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ClusterLog(Base):
    """Why a record is in its work: joined by ISBN or key, created, split or moved by an administrator."""

    __tablename__ = "catalog_cluster_log"

    id: Mapped[str] = id_column()
    work_id: Mapped[str] = mapped_column(String(32), index=True)
    record_id: Mapped[str] = mapped_column(String(32), index=True)
    action: Mapped[str] = mapped_column(String(20))  # created, joined, moved, split
    reason: Mapped[str] = mapped_column(String(300))
    actor: Mapped[str] = mapped_column(String(200))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
