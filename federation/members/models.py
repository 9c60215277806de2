"""Institutions and service points. Hospital level and ownership are data: recognition rules read them."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import Boolean, Date, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from federation.db import Base, id_column, utcnow


class InstitutionKind(enum.StrEnum):
    LIBRARY = "library"
    HOSPITAL = "hospital"
    SYSTEM = "system"  # social security, housing, transport, ...
    FEDERATION = "federation"  # the federation's own operators


class Province(enum.StrEnum):
    CHONGQING = "chongqing"
    SICHUAN = "sichuan"


class Ownership(enum.StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"


class Institution(Base):
    __tablename__ = "institutions"

    id: Mapped[str] = id_column()
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20), index=True)
    province: Mapped[str | None] = mapped_column(String(20))
    city: Mapped[str | None] = mapped_column(String(50))
    # hospitals: 三级甲等, 三级乙等, 三级, 二级甲等, ... kept as the registry writes it
    level: Mapped[str | None] = mapped_column(String(20))
    ownership: Mapped[str | None] = mapped_column(String(20))
    system_kind: Mapped[str | None] = mapped_column(String(40))  # social_security, housing, transport, ...
    participation_since: Mapped[dt.date | None] = mapped_column(Date)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    service_points: Mapped[list[ServicePoint]] = relationship(
        back_populates="institution", order_by="ServicePoint.code", lazy="selectin"
    )


class ServicePoint(Base):
    __tablename__ = "service_points"

    id: Mapped[str] = id_column()
    code: Mapped[str] = mapped_column(String(40), unique=True)
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    is_main: Mapped[bool] = mapped_column(Boolean, default=False)
    city: Mapped[str | None] = mapped_column(String(50))
    address: Mapped[str | None] = mapped_column(String(300))
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    institution: Mapped[Institution] = relationship(back_populates="service_points", lazy="joined")
