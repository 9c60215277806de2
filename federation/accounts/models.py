"""Accounts (staff and residents), login throttling and API keys for member systems."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from federation.db import Base, id_column, utcnow


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = id_column()
    # staff: ROLE@CODE style names; residents: none (they log in with their ID number)
    username: Mapped[str | None] = mapped_column(String(200), unique=True)
    kind: Mapped[str] = mapped_column(String(10))  # staff, resident
    display_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    person_id: Mapped[str | None] = mapped_column(ForeignKey("persons.id"), unique=True)
    institution_code: Mapped[str | None] = mapped_column(String(32))
    roles: Mapped[list[Any]] = mapped_column(default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class LoginThrottle(Base):
    """Recent failed logins per account and per client address (rows, so every process sees them)."""

    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    next_allowed_at: Mapped[dt.datetime | None]
    locked_until: Mapped[dt.datetime | None]


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = id_column()
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(64))
    member_code: Mapped[str] = mapped_column(String(32), index=True)
    scopes: Mapped[list[Any]] = mapped_column(default=list)
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[dt.datetime | None]
    last_used_at: Mapped[dt.datetime | None]
