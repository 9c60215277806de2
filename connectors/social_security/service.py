"""Social security on the identity layer: link a verified card to its person, apply card status events to
credentials, read a resident's summary.

Partner calls happen with no unit of work open; each change then commits in one unit of work with its audit
entries (and, for the event feed, with the watermark: see ``tasks.py``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import select

from connectors.framework import service as connectors
from connectors.framework.errors import ConnectorError
from connectors.framework.feed import contiguous
from connectors.social_security.adapter import HttpSocialSecurity
from connectors.social_security.errors import (
    CardMismatch,
    CardNotActive,
    CardNotFound,
    ConsentRequired,
    NoSocialSecuritySystem,
    NotYourCard,
)
from connectors.social_security.port import SocialSecurityPort
from connectors.social_security.schemas import CardEvent, CardVerification, Summary
from federation.audit.service import Record
from federation.consent.service import Purpose, holding
from federation.db import UnitOfWork
from federation.identity import service as identity
from federation.identity.errors import IdentifierTaken, InvalidIdentifier, PersonNotFound
from federation.identity.models import CredentialStatus, Identifier, IdentifierType
from federation.services import Services

log = logging.getLogger(__name__)
KIND = "social_security"
STATUS = {"lost": CredentialStatus.LOST, "cancelled": CredentialStatus.CANCELLED, "reissued": CredentialStatus.REISSUED}


# --- verifying and linking a card ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LinkedCard:
    person_id: str
    card_masked: str
    connector: str
    member_code: str
    outcome: str  # linked (new), already_linked, registered (a new person)


async def _verify_anywhere(
    svc: Services, card_number: str, name: str, id_number: str
) -> tuple[str, str, CardVerification]:
    """Ask each enabled social-security system until one knows the card."""
    systems = await connectors.of_kind(svc, KIND)
    if not systems:
        raise NoSocialSecuritySystem("no social-security system is connected")
    for system in systems:
        async with connectors.open_client(svc, system.name) as client:
            found = await HttpSocialSecurity(client).verify_card(card_number, name, id_number)
        if found is not None:
            return system.name, system.member_code, found
    raise CardNotFound("no connected social-security system knows this card")


async def verify_and_link(
    svc: Services,
    *,
    card_number: str,
    name: str,
    id_number: str,
    actor: str,
    for_person: str | None = None,
    client_address: str | None = None,
) -> LinkedCard:
    """Verify the card with its system; if it is active and belongs to this name and ID number, link it to the
    person holding the ID number (registering the person if unknown). ``for_person`` (a resident linking their own
    card) refuses an ID number that is not theirs, before the partner is asked and with one answer whoever holds
    it. Linking twice is a no-op."""
    card = identity.normalise_value(IdentifierType.SOCIAL_SECURITY_CARD, card_number)
    number = identity.normalise_value(IdentifierType.ID_NUMBER, id_number)
    name = name.strip()
    card_input = identity.IdentifierInput(IdentifierType.SOCIAL_SECURITY_CARD, card)
    id_input = identity.IdentifierInput(IdentifierType.ID_NUMBER, number)
    if for_person is not None and not await _is_own_id_number(svc, for_person, id_input):
        # before any partner call: a resident must not learn, from which refusal comes back, whether a stranger's
        # card, name and ID number belong together, nor have the stranger's name and ID number sent out
        async with svc.db.uow() as uow:
            await _audit_verification(uow, svc, actor, None, card_input, "", "not_yours", client_address)
            await uow.commit()
        raise NotYourCard("this ID number is not yours")
    try:
        connector, member, answer = await _verify_anywhere(svc, card, name, number)
    except (CardNotFound, ConnectorError) as e:  # the name and ID number were sent out: that is recorded too
        outcome = "not_found" if isinstance(e, CardNotFound) else e.code
        async with svc.db.uow() as uow:
            await _audit_verification(uow, svc, actor, None, card_input, "", outcome, client_address)
            await uow.commit()
        raise
    refused: Exception | None = None
    outcome = "mismatch" if not answer.holder_matches else "inactive" if answer.status != "active" else ""
    if not answer.holder_matches:
        refused = CardMismatch("the card does not belong to this name and ID number")
    elif answer.status != "active":
        refused = CardNotActive(f"the card is {answer.status}", card_status=answer.status)
    else:
        async with svc.db.uow() as uow:
            try:
                person_id, outcome = await _link(uow, svc, card_input, id_input, name, for_person, actor)
            except (IdentifierTaken, NotYourCard) as e:
                refused, outcome = e, "refused"  # rolled back: no half-done link
            else:
                await _audit_verification(uow, svc, actor, person_id, card_input, connector, outcome, client_address)
                await uow.commit()
    if refused is not None:
        async with svc.db.uow() as uow:  # the refusal is recorded too
            await _audit_verification(uow, svc, actor, None, card_input, connector, outcome, client_address)
            await uow.commit()
        raise refused
    masked = identity.mask(IdentifierType.SOCIAL_SECURITY_CARD.value, card)
    return LinkedCard(person_id, masked, connector, member, outcome)


async def _is_own_id_number(svc: Services, person_id: str, id_number: identity.IdentifierInput) -> bool:
    """Whether the ID number is stored (by its blind index) for ``person_id``, merges followed on both sides. An ID
    number stored for no one is not the resident's either: one answer for both, so neither can be told apart."""
    async with svc.db.reader() as s:
        existing = await identity.find_identifier(s, svc.cipher, id_number)
        if existing is None:
            return False
        try:
            holder = await identity.get_person(s, existing.person_id)
            me = await identity.get_person(s, person_id)
        except PersonNotFound:
            return False
    return holder.id == me.id


async def _link(
    uow: UnitOfWork,
    svc: Services,
    card: identity.IdentifierInput,
    id_number: identity.IdentifierInput,
    name: str,
    for_person: str | None,
    actor: str,
) -> tuple[str, str]:
    existing = await identity.find_identifier(uow.session, svc.cipher, id_number)
    if existing is None:
        if for_person is not None:
            raise NotYourCard("this ID number is not yours")
        reg = await identity.register(
            uow, svc, identity.RegisterPerson(name=name, identifiers=[id_number, card]), actor=actor
        )
        return reg.person.id, "registered"
    person = await identity.get_person(uow.session, existing.person_id)
    if for_person is not None and person.id != (await identity.get_person(uow.session, for_person)).id:
        raise NotYourCard("this ID number is not yours")  # checked before the partner call too; this is the race
    held = await identity.find_identifier(uow.session, svc.cipher, card)
    if held is not None:
        owner = await identity.get_person(uow.session, held.person_id)
        if owner.id != person.id:
            raise IdentifierTaken("this card is linked to another person")
        return person.id, "already_linked"
    await identity.add_identifier(uow, svc, person.id, card, actor=actor)
    return person.id, "linked"


async def _audit_verification(
    uow: UnitOfWork,
    svc: Services,
    actor: str,
    person_id: str | None,
    card: identity.IdentifierInput,
    connector: str,
    outcome: str,
    client_address: str | None,
) -> None:
    await svc.audit(
        uow,
        Record(
            action="social_security.card_verified",
            actor=actor,
            outcome="ok" if outcome in ("linked", "already_linked", "registered") else "refused",
            subject_person_id=person_id,
            client_address=client_address,
            details={
                "connector": connector,
                "card": identity.mask(card.type.value, card.value),
                "result": outcome,
            },
        ),
    )


# --- card status events --------------------------------------------------------------------------------------------


def next_batch(events: Iterable[CardEvent], after: int) -> tuple[list[CardEvent], dict[str, int]]:
    """The events to apply now, in order: sequence numbers ``after + 1, after + 2, ...`` with no hole. Duplicates and
    events already applied are dropped; at a gap the batch ends (the rest waits for a later run)."""
    return contiguous(events, after)


async def apply_event(uow: UnitOfWork, svc: Services, event: CardEvent, *, actor: str) -> str:
    """Apply one event to the credential it names; returns what happened (``applied``, ``unknown_card``,
    ``rejected``). Runs in a savepoint, so a refused event leaves nothing half-changed in the batch."""
    try:
        card = identity.IdentifierInput(IdentifierType.SOCIAL_SECURITY_CARD, event.card_number)
        if await identity.find_identifier(uow.session, svc.cipher, card) is None:
            return "unknown_card"  # a card never linked here: nothing to stop
        async with uow.session.begin_nested():
            await identity.set_credential_status(
                uow, svc, card, STATUS[event.type], actor=actor, replacement=event.new_card_number
            )
    except (IdentifierTaken, InvalidIdentifier) as e:
        log.warning("social security: event %d (%s) refused: %s", event.seq, event.type, e.code)
        return "rejected"
    return "applied"


# --- the resident's summary ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SystemSummary:
    connector: str
    member_code: str
    status: str  # ok, not_consented, unknown_person, unavailable
    summary: Summary | None = None
    error_code: str | None = None


async def _id_number_of(svc: Services, person_id: str) -> str:
    async with svc.db.reader() as s:
        q = select(Identifier).where(
            Identifier.person_id == person_id, Identifier.type == IdentifierType.ID_NUMBER.value
        )
        ident = (await s.execute(q)).scalars().first()
    if ident is None:
        raise PersonNotFound("no ID number is linked to this person")
    return identity.reveal(svc.cipher, ident)


async def resident_summary(
    svc: Services, person_id: str, *, actor: str, client_address: str | None = None
) -> list[SystemSummary]:
    """Each connected system's summary of the person, asked only where the person's consent for
    ``social_security_summary`` covers that system; audited (one entry, naming the systems asked)."""
    systems = await connectors.of_kind(svc, KIND)
    if not systems:
        raise NoSocialSecuritySystem("no social-security system is connected")
    async with svc.db.reader() as s:
        allowed = [c for c in systems if await holding(s, person_id, Purpose.SOCIAL_SECURITY_SUMMARY, c.member_code)]
    if not allowed:
        raise ConsentRequired("grant the consent 'social_security_summary' to see your social-security summary")
    number = await _id_number_of(svc, person_id)
    out: list[SystemSummary] = []
    for system in systems:
        if system not in allowed:
            out.append(SystemSummary(system.name, system.member_code, "not_consented"))
            continue
        try:
            async with connectors.open_client(svc, system.name) as client:
                port: SocialSecurityPort = HttpSocialSecurity(client)
                found = await port.summary(number)
        except ConnectorError as e:
            out.append(SystemSummary(system.name, system.member_code, "unavailable", error_code=e.code))
            continue
        status = "ok" if found is not None else "unknown_person"
        out.append(SystemSummary(system.name, system.member_code, status, found))
    async with svc.db.uow() as uow:
        await svc.audit(
            uow,
            Record(
                action="social_security.summary_read",
                actor=actor,
                subject_person_id=person_id,
                purpose=Purpose.SOCIAL_SECURITY_SUMMARY.value,
                client_address=client_address,
                details={"systems": {x.connector: x.status for x in out}},
            ),
        )
        await uow.commit()
    return out


def as_json(items: Sequence[SystemSummary]) -> list[dict[str, Any]]:
    return [
        {
            "connector": x.connector,
            "member_code": x.member_code,
            "status": x.status,
            "error_code": x.error_code,
            **(x.summary.model_dump(mode="json") if x.summary else {"enrolments": [], "pension_transfer": None}),
        }
        for x in items
    ]
