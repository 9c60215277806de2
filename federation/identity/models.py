"""Persons and their identifiers. Identifier values are stored encrypted, found by blind index, shown masked."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Date, Float, ForeignKey, Index, LargeBinary, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from federation.db import Base, id_column, utcnow


class IdentifierType(enum.StrEnum):
    ID_NUMBER = "id_number"  # 居民身份证号码, GB 11643
    SOCIAL_SECURITY_CARD = "social_security_card"  # card number; the social-security number is the ID number
    RESIDENCE_PERMIT = "residence_permit"  # 居住证 number
    LOCAL = "local"  # a member's own number: library card, hospital record number


class CredentialStatus(enum.StrEnum):
    ACTIVE = "active"
    LOST = "lost"
    CANCELLED = "cancelled"
    REISSUED = "reissued"  # replaced by a newer card; this number no longer works


class PersonStatus(enum.StrEnum):
    ACTIVE = "active"
    MERGED = "merged"


def _where_set(column: str) -> dict[str, Any]:
    """A partial index over the rows where ``column`` is set. Mostly-NULL columns need it: SQLite's statistics count
    the NULLs as one value shared by (nearly) every row, and the planner then scans the table rather than use a
    full index, even for ``column = ?``, which never matches NULL."""
    return {f"{dialect}_where": text(f"{column} IS NOT NULL") for dialect in ("sqlite", "postgresql")}


class Person(Base):
    __tablename__ = "persons"
    __table_args__ = (
        Index("ix_persons_phone_index", "phone_index", **_where_set("phone_index")),
        Index("ix_persons_merged_into_id", "merged_into_id", **_where_set("merged_into_id")),
    )

    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(String(200))
    name_key: Mapped[str] = mapped_column(String(200), index=True)
    birth_date: Mapped[dt.date | None] = mapped_column(Date, index=True)
    sex: Mapped[str | None] = mapped_column(String(10))
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_index: Mapped[str | None] = mapped_column(String(64))
    home_institution: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(10), default=PersonStatus.ACTIVE)
    merged_into_id: Mapped[str | None] = mapped_column(ForeignKey("persons.id"))  # who merged into whom
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    identifiers: Mapped[list[Identifier]] = relationship(
        back_populates="person",
        lazy="selectin",
        order_by="Identifier.created_at",
        foreign_keys="Identifier.person_id",
    )


class Identifier(Base):
    __tablename__ = "identifiers"
    __table_args__ = (UniqueConstraint("type", "institution_code", "value_index"),)

    id: Mapped[str] = id_column()
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)
    type: Mapped[str] = mapped_column(String(30))
    # '' for national identifiers, so the unique constraint holds (NULLs never collide)
    institution_code: Mapped[str] = mapped_column(String(32), default="")
    kind: Mapped[str | None] = mapped_column(String(40))  # for local ids: library_card, hospital_record, ...
    value_index: Mapped[str] = mapped_column(String(64))
    value_enc: Mapped[bytes] = mapped_column(LargeBinary)
    masked: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(12), default=CredentialStatus.ACTIVE)
    replaced_by_id: Mapped[str | None] = mapped_column(ForeignKey("identifiers.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    status_changed_at: Mapped[dt.datetime | None]

    person: Mapped[Person] = relationship(back_populates="identifiers", foreign_keys=[person_id])


class MatchReview(Base):
    """An incoming record that scored between the link and new-person thresholds: a person decides."""

    __tablename__ = "match_reviews"

    id: Mapped[str] = id_column()
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)  # created provisionally
    candidate_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)
    score: Mapped[float] = mapped_column(Float)
    reasons: Mapped[list[Any]]
    state: Mapped[str] = mapped_column(String(10), default="open", index=True)  # open, linked, distinct
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Merge(Base):
    """One merge of two persons, with what moved, so it can be undone."""

    __tablename__ = "person_merges"

    id: Mapped[str] = id_column()
    survivor_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)
    merged_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)
    moved_identifier_ids: Mapped[list[Any]]
    reason: Mapped[str] = mapped_column(String(500))
    actor: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    undone_at: Mapped[dt.datetime | None]
    undone_by: Mapped[str | None] = mapped_column(String(200))
