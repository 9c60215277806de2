"""Granting, revoking and checking a resident's consents."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from federation.audit.service import Record
from federation.consent.models import Consent
from federation.db import UnitOfWork, utcnow
from federation.errors import InvalidInput, NotFound
from federation.members.models import Institution
from federation.services import Services


class Purpose(enum.StrEnum):
    RESULT_SHARING = "result_sharing"  # hospitals see prior examination and test results
    LIBRARY_HISTORY = "library_history"  # member libraries see loans made elsewhere
    TRAVEL_SUMMARY = "travel_summary"  # transport summaries in the portal
    HOUSING_SUMMARY = "housing_summary"  # provident fund and rental housing data in the portal
    SOCIAL_SECURITY_SUMMARY = "social_security_summary"


class ConsentNotFound(NotFound):
    code = "consent.not_found"


class InvalidConsent(InvalidInput):
    code = "consent.invalid"


async def grant(
    uow: UnitOfWork,
    svc: Services,
    person_id: str,
    purpose: Purpose,
    *,
    members: Sequence[str] | None,
    expires_at: dt.datetime | None,
    actor: str,
) -> Consent:
    """``members=None`` grants to every member; a list names the members."""
    if expires_at is not None and expires_at <= utcnow():
        raise InvalidConsent("the expiry must be in the future")
    if members is not None and not members:
        raise InvalidConsent("name at least one member, or grant to all")
    if members:
        named = {m.strip().upper() for m in members}
        known = set((await uow.session.execute(select(Institution.code).where(Institution.code.in_(named)))).scalars())
        if named - known:
            # a mistyped code would make a consent nobody can use
            raise InvalidConsent(f"no member(s) {', '.join(sorted(named - known))}", unknown=sorted(named - known))
    consent = Consent(
        person_id=person_id,
        purpose=purpose.value,
        all_members=members is None,
        members=sorted({m.strip().upper() for m in members or ()}),
        expires_at=expires_at,
        granted_by=actor,
    )
    uow.session.add(consent)
    await uow.session.flush()
    await svc.audit(
        uow,
        Record(
            action="consent.grant",
            actor=actor,
            subject_person_id=person_id,
            purpose=purpose.value,
            details={
                "consent": consent.id,
                "members": consent.members or "all",
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        ),
    )
    uow.emit("consent.changed", person_id=person_id, purpose=purpose.value)
    return consent


async def revoke(uow: UnitOfWork, svc: Services, person_id: str, consent_id: str, *, actor: str) -> Consent:
    consent = await uow.session.get(Consent, consent_id)
    if consent is None or consent.person_id != person_id:
        raise ConsentNotFound(f"no consent {consent_id}")
    if consent.revoked_at is None:
        consent.revoked_at = utcnow()
        await svc.audit(
            uow,
            Record(
                action="consent.revoke",
                actor=actor,
                subject_person_id=person_id,
                purpose=consent.purpose,
                details={"consent": consent.id},
            ),
        )
        uow.emit("consent.changed", person_id=person_id, purpose=consent.purpose)
    return consent


def in_force(at: Any):  # noqa: ANN202 - SQL expressions
    """The conditions of a consent in force at ``at`` (a datetime or a bound parameter)."""
    return (Consent.revoked_at.is_(None), or_(Consent.expires_at.is_(None), Consent.expires_at > at))


def covers(all_members: bool, members: list[Any] | None, institution: str) -> bool:
    """Whether a consent given to ``members`` (or to every member) lets ``institution`` act on it."""
    return bool(all_members) or institution.upper() in (members or ())


async def holding(
    session: AsyncSession, person_id: str, purpose: Purpose, institution: str, at: dt.datetime | None = None
) -> Consent | None:
    """The consent that lets ``institution`` act for ``purpose`` on this person now, if any."""
    at = at or utcnow()
    q = select(Consent).where(Consent.person_id == person_id, Consent.purpose == purpose.value, *in_force(at))
    for consent in (await session.execute(q.order_by(Consent.granted_at.desc()))).scalars():
        if covers(consent.all_members, consent.members, institution):
            return consent
    return None


async def list_for(session: AsyncSession, person_id: str) -> list[Consent]:
    q = select(Consent).where(Consent.person_id == person_id).order_by(Consent.granted_at.desc())
    return list((await session.execute(q)).scalars())
