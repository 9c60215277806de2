"""Who may read a patient's results, and the record of every attempt.

A doctor (or a hospital system's API key) reads a person's results only while the person's consent for result
sharing covers the reader's institution, or under an emergency override the reader opened with a stated reason.
Every attempt, allowed or refused, goes into the audit trail in a unit of work of its own, committed before the
answer leaves: a refused read is recorded even though the request fails, and the resident sees both in their
access log. Overrides are flagged and wait for an administrator's review.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import Select, and_, bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from federation.audit.models import AuditEntry
from federation.audit.service import Record
from federation.consent import service as consent
from federation.consent.models import Consent
from federation.db import UnitOfWork, utcnow
from federation.errors import Conflict, Forbidden, InvalidInput, NotFound
from federation.identity.idnumber import mask_id_numbers_in_text
from federation.identity.models import Person, PersonStatus
from federation.services import Services
from federation.web.routing import Principal
from health import recognition
from health.models import AccessOverride, CatalogueGeneration

log = logging.getLogger(__name__)
PURPOSE = consent.Purpose.RESULT_SHARING.value
T = TypeVar("T")
OVERRIDE_HOURS = 24


class Basis(enum.StrEnum):
    CONSENT = "consent"
    OVERRIDE = "override"
    SELF = "self"


class NoConsent(Forbidden):
    code = "health.no_consent"
    title = "No consent for result sharing"


class PatientNotFound(NotFound):
    code = "health.patient_not_found"


class OverrideNotFound(NotFound):
    code = "health.override_not_found"


class InvalidOverride(InvalidInput):
    code = "health.override_invalid"


class OverrideReviewed(Conflict):
    code = "health.override_reviewed"


@dataclasses.dataclass(frozen=True)
class Grant:
    person_id: str
    basis: Basis
    consent_id: str | None = None
    override_id: str | None = None
    # the person and everyone merged into them, when the check saw there is nobody (None: not known)
    persons: tuple[str, ...] | None = None

    @property
    def flagged(self) -> bool:
        return self.basis is Basis.OVERRIDE


async def live_person(session: AsyncSession, person_id: str) -> Person:
    """The person, following a merge to the survivor; unknown ids are 404."""
    person_id = await live_person_id(session, person_id)
    person = await session.get(Person, person_id)
    if person is None:
        raise PatientNotFound("no such patient")
    return person


async def live_person_id(session: AsyncSession, person_id: str) -> str:
    """The id of the person or of the survivor it was merged into, with one small read per hop."""
    for _ in range(8):  # merge chains are short; a cycle would be a bug, not a reason to spin
        row = (
            await session.execute(select(Person.status, Person.merged_into_id).where(Person.id == person_id))
        ).first()
        if row is None:
            break
        if row.status != PersonStatus.MERGED or not row.merged_into_id:
            return person_id
        person_id = row.merged_into_id
    raise PatientNotFound("no such patient")


async def _override(session: AsyncSession, who: Principal, person_id: str, now: dt.datetime) -> Grant | None:
    q = (
        select(AccessOverride.id)
        .where(
            AccessOverride.person_id == person_id,
            AccessOverride.actor == who.actor,
            AccessOverride.expires_at > now,
        )
        .order_by(AccessOverride.created_at.desc())
        .limit(1)
    )
    override_id = (await session.execute(q)).scalar_one_or_none()
    if override_id is not None:
        return Grant(person_id, Basis.OVERRIDE, override_id=override_id)
    return None


_MergedIn = aliased(Person)


@functools.cache
def _check_statement() -> Select[Any]:
    """Everything the usual check needs, in one statement: the person (and where a merge sent them), whether
    anyone was merged into them, the recognition catalogue's generation, and every result-sharing consent in
    force, newest first (a row per consent; one row without consent columns when there is none)."""
    at = bindparam("at", type_=Consent.expires_at.type)
    merged_in = select(_MergedIn.id).where(_MergedIn.merged_into_id == Person.id).exists()
    generation = (
        select(CatalogueGeneration.generation)
        .where(CatalogueGeneration.id == recognition.GENERATION_ROW)
        .scalar_subquery()
    )
    return (
        select(
            Person.status,
            Person.merged_into_id,
            merged_in.label("merged_in"),
            generation.label("generation"),
            Consent.id.label("consent_id"),
            Consent.all_members,
            Consent.members,
        )
        .outerjoin(Consent, and_(Consent.person_id == Person.id, Consent.purpose == PURPOSE, *consent.in_force(at)))
        .where(Person.id == bindparam("person"))
        .order_by(Consent.granted_at.desc())
    )


async def check(session: AsyncSession, who: Principal, person_id: str, *, hops: int = 8) -> tuple[str, Grant | None]:
    """The basis on which ``who`` may read this person's results now: the live person's id (a merged person is
    followed to the survivor) and the grant (consent, an open override, or a resident's own), or None. One
    statement in the usual case; a merge costs one more per hop, a reader without consent one more for the
    override. Notes the catalogue generation it read for the session's next ``load_catalogue``."""
    now = utcnow()
    rows = (await session.execute(_check_statement(), {"person": person_id, "at": now})).all()
    if not rows or hops <= 0:  # merge chains are short; a cycle would be a bug, not a reason to spin
        raise PatientNotFound("no such patient")
    first = rows[0]
    if first.status == PersonStatus.MERGED and first.merged_into_id:
        return await check(session, who, first.merged_into_id, hops=hops - 1)
    recognition.note_generation(session, first.generation)
    persons = None if first.merged_in else (person_id,)
    if who.kind == "resident":
        return person_id, (Grant(person_id, Basis.SELF, persons=persons) if who.person_id == person_id else None)
    if who.institution:
        for r in rows:
            if r.consent_id is not None and consent.covers(r.all_members, r.members, who.institution):
                return person_id, Grant(person_id, Basis.CONSENT, consent_id=r.consent_id, persons=persons)
    grant = await _override(session, who, person_id, now)
    return person_id, (dataclasses.replace(grant, persons=persons) if grant is not None else None)


def _record(
    who: Principal, person_id: str, action: str, grant: Grant | None, client: str | None, details: dict[str, Any]
) -> Record:
    extra: dict[str, Any] = dict(details)
    if grant is not None:
        extra["basis"] = grant.basis.value
        if grant.consent_id:
            extra["consent"] = grant.consent_id
        if grant.override_id:
            extra["override"] = grant.override_id
            extra["flagged"] = True
    return Record(
        action=action,
        actor=who.actor,
        actor_institution=who.institution,
        subject_person_id=person_id,
        purpose=PURPOSE,
        outcome="ok" if grant is not None else "refused",
        client_address=client,
        details=extra,
    )


async def authorise(
    svc: Services,
    who: Principal,
    person_id: str,
    *,
    action: str,
    client: str | None = None,
    details: dict[str, Any] | None = None,
) -> Grant:
    """Decide whether ``who`` may read the person's results, record the attempt (committed), and return the grant
    or raise :class:`NoConsent`. ``person_id`` may name a merged person: the survivor is read."""
    grant, _ = await read_with_grant(svc, who, person_id, _nothing, action=action, client=client, details=details)
    return grant


async def _nothing(session: AsyncSession, grant: Grant) -> None:
    return None


async def read_with_grant(
    svc: Services,
    who: Principal,
    person_id: str,
    read: Callable[[AsyncSession, Grant], Awaitable[T]],
    *,
    action: str,
    client: str | None = None,
    details: dict[str, Any] | None = None,
) -> tuple[Grant, T]:
    """:func:`authorise` and the read it allows: decide, record the attempt, and read (only when allowed) while
    the record commits on a connection of its own. Nothing read leaves this function unless its audit entry is
    committed: the read's result is returned only once the commit is done, and a failed commit fails the
    request. A read that fails after the check is still on record as an allowed attempt."""
    async with svc.db.reader(snapshot=False) as s:  # the check and the read: each statement holds by itself
        person_id, grant = await check(s, who, person_id)
        record = _record(who, person_id, action, grant, client, details or {})
        if grant is None:
            await _commit_record(svc, record)
            raise NoConsent(
                "the patient has not consented to share results with your institution; an emergency override "
                "with a stated reason is recorded and reviewed",
                person_id=person_id,
            )
        # the audit's round trips (BEGIN, the chain's lock, the INSERT, COMMIT) overlap the read's work
        audited = asyncio.ensure_future(_commit_record(svc, record))
        try:
            result = await read(s, grant)
        except BaseException:
            await asyncio.wait([audited])  # the attempt is on record before the read's error leaves
            if not audited.cancelled() and audited.exception() is not None:
                log.error("recording a health read failed: %s", audited.exception())
            raise
    await asyncio.shield(audited)  # a request cancelled now still leaves its record committed
    return grant, result


async def _commit_record(svc: Services, record: Record) -> None:
    async with svc.db.uow() as uow:
        await svc.audit(uow, record)
        await uow.commit()


async def open_override(
    svc: Services, who: Principal, person_id: str, reason: str, *, client: str | None = None
) -> AccessOverride:
    """Open an emergency override for ``who`` on this person: reads are allowed for OVERRIDE_HOURS, flagged."""
    reason = mask_id_numbers_in_text(" ".join(reason.split()))  # free text kept in clear never holds an ID number
    if len(reason) < 10:
        raise InvalidOverride("state the clinical reason for the override (at least 10 characters)")
    async with svc.db.uow() as uow:
        person = await live_person(uow.session, person_id)
        now = utcnow()
        override = AccessOverride(
            person_id=person.id,
            actor=who.actor,
            institution=who.institution,
            reason=reason[:500],
            created_at=now,
            expires_at=now + dt.timedelta(hours=OVERRIDE_HOURS),
        )
        uow.session.add(override)
        await uow.session.flush()
        await svc.audit(
            uow,
            Record(
                action="health.override.open",
                actor=who.actor,
                actor_institution=who.institution,
                subject_person_id=person.id,
                purpose=PURPOSE,
                client_address=client,
                details={"override": override.id, "reason": override.reason, "flagged": True},
            ),
        )
        uow.emit("health.override_opened", override_id=override.id, person_id=person.id)
        await uow.commit()
    return override


async def pending_overrides(session: AsyncSession, *, limit: int = 100) -> list[AccessOverride]:
    q = select(AccessOverride).where(AccessOverride.reviewed_at.is_(None)).order_by(AccessOverride.created_at)
    return list((await session.execute(q.limit(limit))).scalars())


async def review_override(
    uow: UnitOfWork, svc: Services, override_id: str, *, outcome: str, note: str, actor: str
) -> AccessOverride:
    override = await uow.session.get(AccessOverride, override_id)
    if override is None:
        raise OverrideNotFound(f"no override {override_id}")
    if override.reviewed_at is not None:
        raise OverrideReviewed("this override was reviewed already")
    override.reviewed_at = utcnow()
    override.reviewed_by = actor
    override.review_outcome = outcome
    note = mask_id_numbers_in_text(note)
    override.review_note = note[:500]
    if outcome != "justified":
        override.expires_at = min(override.expires_at, override.reviewed_at)  # an unjustified override ends now
    await svc.audit(
        uow,
        Record(
            action="health.override.review",
            actor=actor,
            subject_person_id=override.person_id,
            purpose=PURPOSE,
            details={"override": override.id, "outcome": outcome, "note": note[:500]},
        ),
    )
    return override


# -- the audit trail as FHIR AuditEvent --------------------------------------------------------------------------

_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_REST = "http://terminology.hl7.org/CodeSystem/audit-event-type"
_ACTION = {"health.prior_results": "R", "health.fhir.read": "R", "health.fhir.search": "E", "health.lookup": "E"}


def audit_event(entry: AuditEntry, base: str = "") -> dict[str, Any]:
    """One audit entry as an R4 ``AuditEvent``: who (agent), whose data (entity), why (purposeOfEvent: TREAT, or
    ETREAT under an emergency override), allowed or refused (outcome 0 / 4)."""
    details = entry.details or {}
    override = details.get("override")
    purpose = "ETREAT" if override else "TREAT"
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(entry.seq),
        "type": {"system": _DCM, "code": "110110", "display": "Patient Record"},
        "subtype": [{"system": _REST, "code": "rest", "display": entry.action}],
        "action": _ACTION.get(entry.action, "E"),
        "recorded": entry.at.isoformat(),
        "outcome": "0" if entry.outcome == "ok" else "4",
        "outcomeDesc": entry.outcome,
        "purposeOfEvent": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": purpose}]}
        ],
        "agent": [
            {
                "who": {"display": entry.actor},
                "requestor": True,
                **({"network": {"address": entry.client_address, "type": "2"}} if entry.client_address else {}),
            }
        ],
        "source": {"observer": {"display": "twincity"}},
        "entity": [],
    }
    if entry.actor_institution:
        event["agent"][0]["location"] = {"display": entry.actor_institution}
    if entry.subject_person_id:
        event["entity"].append(
            {
                "what": {"reference": f"{base}Patient/{entry.subject_person_id}"},
                "role": {
                    "system": "http://terminology.hl7.org/CodeSystem/object-role",
                    "code": "1",
                    "display": "Patient",
                },
            }
        )
    if override:
        event["entity"].append({"what": {"display": f"override {override}"}, "description": "emergency override"})
    return event
