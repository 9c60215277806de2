"""The housing tables: certificates the federation issued, and public-rental applications mirrored from the feed."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, ForeignKey, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from federation.db import Base, utcnow


class DepositCertificate(Base):
    """A deposit certificate (缴存证明) as issued. The signed document names the holder and their ID number, so it
    is kept encrypted (``svc.cipher``); ``digest`` (SHA-256 of the signed bytes) lets a check by id compare what a
    fund centre holds without decrypting anything else."""

    __tablename__ = "housing_certificates"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)
    connector: Mapped[str] = mapped_column(String(80))
    member_code: Mapped[str] = mapped_column(String(32))
    kid: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    digest: Mapped[str] = mapped_column(String(64))
    document_enc: Mapped[bytes] = mapped_column(LargeBinary)
    revoked_at: Mapped[dt.datetime | None]
    created_by: Mapped[str] = mapped_column(String(200), default="")


class RentalApplication(Base):
    """A public-rental housing (公租房) application as the city's system last reported it. ``seq`` is the feed
    position of that report: an older or repeated report never overwrites a newer one."""

    __tablename__ = "housing_rental_applications"
    __table_args__ = (UniqueConstraint("connector", "application_no"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    connector: Mapped[str] = mapped_column(String(80))
    application_no: Mapped[str] = mapped_column(String(64))
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)
    city: Mapped[str] = mapped_column(String(50))
    estate: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(30))
    queue_position: Mapped[int | None] = mapped_column(Integer)
    submitted_on: Mapped[dt.date] = mapped_column(Date)
    partner_updated_at: Mapped[dt.datetime]
    seq: Mapped[int] = mapped_column(Integer)
    synced_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
