"""The audit trail: append-only, each entry chained to the one before it in its chain by a keyed hash."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, Integer, SmallInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from federation.db import Base


class AuditEntry(Base):
    """One entry. ``seq`` orders the whole trail (given by the database as the entry is inserted); ``chain`` and
    ``link`` place the entry in its hash chain: entry ``link`` of chain ``chain`` follows entry ``link - 1``,
    whose hash is its ``prev_hash``. Writers on PostgreSQL spread over several chains, so that they do not wait
    for one another (``federation.audit.service``); the trail written before chains were many is chain 0, with
    ``link`` equal to ``seq``."""

    __tablename__ = "audit_entries"
    __table_args__ = (UniqueConstraint("chain", "link"),)

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    chain: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    link: Mapped[int] = mapped_column(BigInteger)
    at: Mapped[dt.datetime]
    actor: Mapped[str] = mapped_column(String(200))
    actor_institution: Mapped[str | None] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(80), index=True)
    subject_person_id: Mapped[str | None] = mapped_column(String(32), index=True)
    purpose: Mapped[str | None] = mapped_column(String(40))
    outcome: Mapped[str] = mapped_column(String(20))
    client_address: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)
