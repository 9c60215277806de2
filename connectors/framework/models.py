"""The ``connectors`` table: one row per registered connector, its configuration, secrets, watermark and health."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from federation.db import Base, utcnow


class Connector(Base):
    """A connection to one member system of one kind.

    ``watermark`` is the last change of the partner's feed that is committed here; it is written only in the unit
    of work that commits the data it covers. The circuit columns mirror the breaker of the last process that ran
    it, so the state is visible and survives a restart.
    """

    __tablename__ = "connectors"

    name: Mapped[str] = mapped_column(String(80), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    member_code: Mapped[str] = mapped_column(String(32), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    secrets_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    watermark: Mapped[str | None] = mapped_column(String(200))
    last_counts: Mapped[dict[str, Any]] = mapped_column(default=dict)
    last_run_at: Mapped[dt.datetime | None]
    last_success_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    last_error_code: Mapped[str | None] = mapped_column(String(60))
    last_error_at: Mapped[dt.datetime | None]
    circuit_state: Mapped[str] = mapped_column(String(12), default="closed")
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    circuit_opened_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
