"""The transport tables: commuter passes and monthly trip counts per linked transit card. Summaries only: no trip,
station or time of travel is ever stored here. Cards themselves are identifiers of the identity layer (type
``local``, the operator's member code, kind ``transit_card``), encrypted there."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from federation.db import Base, utcnow


class CommuterPass(Base):
    """A rail commuter pass (monthly, counted rides) on a linked card, as the operator last reported it."""

    __tablename__ = "transport_passes"
    __table_args__ = (UniqueConstraint("connector", "pass_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    connector: Mapped[str] = mapped_column(String(80))
    pass_id: Mapped[str] = mapped_column(String(64))
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)
    identifier_id: Mapped[str] = mapped_column(ForeignKey("identifiers.id"), index=True)
    product: Mapped[str] = mapped_column(String(100))
    period: Mapped[str] = mapped_column(String(7))  # YYYY-MM
    rides_total: Mapped[int] = mapped_column(Integer)
    rides_used: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20))
    seq: Mapped[int] = mapped_column(Integer)
    synced_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TripCount(Base):
    """How many trips a linked card made in one month: the only travel figure the federation keeps."""

    __tablename__ = "transport_trip_counts"
    __table_args__ = (UniqueConstraint("connector", "identifier_id", "month"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    connector: Mapped[str] = mapped_column(String(80))
    identifier_id: Mapped[str] = mapped_column(ForeignKey("identifiers.id"), index=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM
    trips: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer)
    synced_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
