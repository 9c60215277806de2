"""Transport on the identity layer: link a transit card to its holder (an encrypted ``local`` identifier of the
operator, kind ``transit_card``), apply the operators' pass and trip-count updates, and the resident's summary.

Travel is sensitive personal information: the federation asks operators for summaries only, stores passes and
monthly counts only, shows them only with the consent ``travel_summary``, and never writes a card number (other
than masked), a station or a time of travel to a log line or the audit trail.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from sqlalchemy import select

from connectors.framework import service as connectors
from connectors.framework.service import LoadedConnector
from connectors.transport.adapter import HttpTransport
from connectors.transport.errors import (
    CardNotActive,
    CardNotFound,
    CardNotYours,
    ConsentRequired,
    NoTransportSystem,
)
from connectors.transport.models import CommuterPass, TripCount
from connectors.transport.schemas import PassUpdate, TripCountUpdate
from federation.audit.service import Record
from federation.consent.service import Purpose, holding
from federation.db import UnitOfWork
from federation.identity import service as identity
from federation.identity.errors import IdentifierTaken, InvalidIdentifier, PersonNotFound
from federation.identity.models import Identifier, IdentifierType
from federation.services import Services

log = logging.getLogger(__name__)
KIND = "transport"
CARD_KIND = "transit_card"


def card_input(member_code: str, card_number: str) -> identity.IdentifierInput:
    return identity.IdentifierInput(IdentifierType.LOCAL, card_number, member_code, CARD_KIND)


async def _systems(svc: Services) -> list[LoadedConnector]:
    systems = await connectors.of_kind(svc, KIND)
    if not systems:
        raise NoTransportSystem("no transit operator is connected")
    return systems


async def _id_number_of(svc: Services, person_id: str) -> str:
    async with svc.db.reader() as s:
        q = select(Identifier).where(
            Identifier.person_id == person_id, Identifier.type == IdentifierType.ID_NUMBER.value
        )
        ident = (await s.execute(q)).scalars().first()
    if ident is None:
        raise PersonNotFound("no ID number is linked to this person")
    return identity.reveal(svc.cipher, ident)


# --- linking a card ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LinkedCard:
    operator: str
    card_masked: str
    outcome: str  # linked, already_linked
    passes: int
    months: int


async def link_card(
    svc: Services, person_id: str, *, operator: str, card_number: str, actor: str, client_address: str | None = None
) -> LinkedCard:
    """Link the resident's own card: the operator confirms it is registered to their ID number and active; its
    current passes and monthly counts come with it (the feed's earlier updates passed before it was linked)."""
    systems = [c for c in await _systems(svc) if c.member_code == operator.strip().upper()]
    if not systems:
        raise NoTransportSystem(f"no transit operator {operator} is connected")
    system = systems[0]
    card = identity.normalise_value(IdentifierType.LOCAL, card_number)
    number = await _id_number_of(svc, person_id)
    async with connectors.open_client(svc, system.name) as client:
        port = HttpTransport(client)
        checked = await port.check_card(card, number)
        snapshot = await port.card_snapshot(card) if checked and checked.holder_matches else None
    masked = identity.mask(IdentifierType.LOCAL.value, card)
    refused: Exception | None = None
    if checked is None:
        refused = CardNotFound("the operator does not know this card")
    elif not checked.holder_matches:
        refused = CardNotYours("the card is not registered to your ID number")
    elif checked.status != "active":
        refused = CardNotActive(f"the card is {checked.status}", card_status=checked.status)
    outcome, passes, months = "refused", 0, 0
    if refused is None and snapshot is not None:
        async with svc.db.uow() as uow:
            inp = card_input(system.member_code, card)
            held = await identity.find_identifier(uow.session, svc.cipher, inp)
            if held is not None and held.person_id != person_id:
                refused = IdentifierTaken("this card is linked to another person")
            else:
                outcome = "already_linked" if held is not None else "linked"
                if held is None:
                    await identity.add_identifier(uow, svc, person_id, inp, actor=actor)
                for update in snapshot.updates:
                    if await apply_update(uow, svc, system, update, actor=actor) == "applied":
                        passes += update.type == "pass"
                        months += update.type == "trip_count"
                await _audit_link(uow, svc, actor, person_id, system.member_code, masked, outcome, client_address)
                await uow.commit()
    if refused is not None:
        async with svc.db.uow() as uow:  # the refusal is recorded too; nothing else was stored
            await _audit_link(uow, svc, actor, person_id, system.member_code, masked, "refused", client_address)
            await uow.commit()
        raise refused
    return LinkedCard(system.member_code, masked, outcome, passes, months)


async def _audit_link(
    uow: UnitOfWork,
    svc: Services,
    actor: str,
    person_id: str,
    operator: str,
    masked: str,
    outcome: str,
    client_address: str | None,
) -> None:
    await svc.audit(
        uow,
        Record(
            action="transport.card_linked",
            actor=actor,
            outcome="refused" if outcome == "refused" else "ok",
            subject_person_id=person_id,
            client_address=client_address,
            details={"operator": operator, "card": masked, "result": outcome},
        ),
    )


# --- the operators' feed -------------------------------------------------------------------------------------------


async def apply_update(
    uow: UnitOfWork, svc: Services, system: LoadedConnector, update: PassUpdate | TripCountUpdate, *, actor: str
) -> str:
    """Upsert one pass or monthly count; returns ``applied``, ``stale`` (a newer update is already here) or
    ``unknown_card`` (no person linked the card: nothing is stored)."""
    try:
        ident = await identity.find_identifier(
            uow.session, svc.cipher, card_input(system.member_code, update.card_number)
        )
    except InvalidIdentifier:
        return "unknown_card"
    if ident is None:
        return "unknown_card"
    row: CommuterPass | TripCount | None
    if isinstance(update, PassUpdate):
        q = select(CommuterPass).where(CommuterPass.connector == system.name, CommuterPass.pass_id == update.pass_id)
        row = (await uow.session.execute(q)).scalar_one_or_none()
        if row is not None and row.seq >= update.seq:
            return "stale"
        if row is None:
            row = CommuterPass(connector=system.name, pass_id=update.pass_id)
            uow.session.add(row)
        row.product, row.period, row.status = update.product, update.period, update.status
        row.rides_total, row.rides_used = update.rides_total, update.rides_used
        what = {"pass": update.pass_id, "period": update.period, "status": update.status}
    else:
        q2 = select(TripCount).where(
            TripCount.connector == system.name, TripCount.identifier_id == ident.id, TripCount.month == update.month
        )
        row = (await uow.session.execute(q2)).scalar_one_or_none()
        if row is not None and row.seq >= update.seq:
            return "stale"
        if row is None:
            row = TripCount(connector=system.name, identifier_id=ident.id, month=update.month)
            uow.session.add(row)
        row.trips = update.trips
        what = {"month": update.month}
    row.person_id, row.identifier_id, row.seq = ident.person_id, ident.id, update.seq
    await uow.session.flush()
    await svc.audit(
        uow,
        Record(
            action="transport.summary_synced",
            actor=actor,
            subject_person_id=ident.person_id,
            details={"connector": system.name, "type": update.type, "card": ident.masked, **what},
        ),
    )
    return "applied"


# --- the resident's summary ----------------------------------------------------------------------------------------


async def resident_summary(
    svc: Services, person_id: str, *, actor: str, client_address: str | None = None
) -> dict[str, Any]:
    """Linked cards, passes with remaining rides and trips per month, for the operators the person's consent
    ``travel_summary`` covers; never a single trip. Audited."""
    systems = await _systems(svc)
    async with svc.db.reader() as s:
        allowed = [c for c in systems if await holding(s, person_id, Purpose.TRAVEL_SUMMARY, c.member_code)]
        if not allowed:
            raise ConsentRequired("grant the consent 'travel_summary' to see your travel summary")
        members_ = {c.member_code for c in allowed}
        names = {c.name: c.member_code for c in allowed}
        q = select(Identifier).where(
            Identifier.person_id == person_id,
            Identifier.type == IdentifierType.LOCAL.value,
            Identifier.kind == CARD_KIND,
            Identifier.institution_code.in_(members_),
        )
        cards = list((await s.execute(q)).scalars())
        masked = {c.id: c.masked for c in cards}
        passes = list(
            (
                await s.execute(
                    select(CommuterPass)
                    .where(CommuterPass.person_id == person_id, CommuterPass.connector.in_(names))
                    .order_by(CommuterPass.period.desc(), CommuterPass.pass_id)
                )
            ).scalars()
        )
        counts = list(
            (
                await s.execute(
                    select(TripCount)
                    .where(TripCount.person_id == person_id, TripCount.connector.in_(names))
                    .order_by(TripCount.month.desc())
                )
            ).scalars()
        )
    monthly: dict[tuple[str, str], int] = {}
    for c in counts:
        key = (names[c.connector], c.month)
        monthly[key] = monthly.get(key, 0) + c.trips
    out = {
        "operators": [
            {"connector": c.name, "member_code": c.member_code, "status": "ok" if c in allowed else "not_consented"}
            for c in systems
        ],
        "cards": [{"operator": c.institution_code, "card": c.masked, "status": c.status} for c in cards],
        "passes": [
            {
                "operator": names[p.connector],
                "card": masked.get(p.identifier_id, ""),
                "product": p.product,
                "period": p.period,
                "status": p.status,
                "rides_total": p.rides_total,
                "rides_used": p.rides_used,
                "rides_remaining": max(0, p.rides_total - p.rides_used),
            }
            for p in passes
        ],
        "monthly_trips": [{"operator": op, "month": m, "trips": n} for (op, m), n in monthly.items()],
    }
    async with svc.db.uow() as uow:
        await svc.audit(
            uow,
            Record(
                action="transport.summary_read",
                actor=actor,
                subject_person_id=person_id,
                purpose=Purpose.TRAVEL_SUMMARY.value,
                client_address=client_address,
                details={"operators": sorted(members_), "cards": len(cards), "passes": len(passes)},
            ),
        )
        await uow.commit()
    return out
