"""The inbox's one table: a message to a person, bilingual, with a link to what it is about."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from federation.db import Base, id_column, utcnow


class InboxMessage(Base):
    """One notice in a resident's portal inbox.

    ``key`` names the occurrence the message is about (say ``circulation.overdue:<loan>:2026-03-01``): the outbox
    hands an event to its handlers at least once, and the unique key turns a second delivery into nothing.
    """

    __tablename__ = "inbox_messages"
    __table_args__ = (Index("ix_inbox_messages_person_created", "person_id", "created_at"),)

    id: Mapped[str] = id_column()
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"))
    key: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(60))
    title_zh: Mapped[str] = mapped_column(String(200))
    title_en: Mapped[str] = mapped_column(String(200))
    body_zh: Mapped[str] = mapped_column(String(2000))
    body_en: Mapped[str] = mapped_column(String(2000))
    link: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    read_at: Mapped[dt.datetime | None]
