"""A resident's consents: purpose, which members, until when."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from federation.db import Base, id_column, utcnow


class Consent(Base):
    __tablename__ = "consents"

    id: Mapped[str] = id_column()
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)
    purpose: Mapped[str] = mapped_column(String(40))
    all_members: Mapped[bool] = mapped_column(Boolean, default=False)
    members: Mapped[list[Any]] = mapped_column(default=list)
    granted_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime | None]
    revoked_at: Mapped[dt.datetime | None]
    granted_by: Mapped[str] = mapped_column(String(200))
