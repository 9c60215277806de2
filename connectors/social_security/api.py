"""Social security over HTTP: verify and link a card; a resident's summary for the portal."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web
from pydantic import Field

from connectors.social_security import service
from federation.app import client_address, principal, services
from federation.errors import Forbidden
from federation.web.routing import RESIDENT, Routes, staff
from federation.web.schema import Input, Output

routes = Routes("social_security")


class CardVerificationIn(Input):
    card_number: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=100)
    id_number: str = Field(min_length=15, max_length=20)


class LinkedCardOut(Output):
    person_id: str
    card: str = Field(description="masked")
    connector: str
    member_code: str
    outcome: str = Field(description="linked, already_linked or registered")


class Enrolment(Output):
    city: str
    scheme: str
    status: str
    since: str


class PensionTransfer(Output):
    status: str
    from_city: str | None
    to_city: str | None
    updated_at: dt.datetime | None


class SystemSummaryOut(Output):
    connector: str
    member_code: str
    status: str = Field(description="ok, not_consented, unknown_person or unavailable")
    error_code: str | None
    enrolments: list[Enrolment]
    pension_transfer: PensionTransfer | None


class SummaryOut(Output):
    systems: list[SystemSummaryOut]


@routes.post(
    "/api/v1/social-security/card-verifications",
    access=RESIDENT | staff("librarian", "admin"),
    body=CardVerificationIn,
    response=LinkedCardOut,
    status=201,
    summary="Verify a social-security card with its system and link it to the person (a resident: their own)",
    errors=(403, 404, 409, 422, 502, 503),
)
async def verify_card(request: web.Request, body: CardVerificationIn) -> LinkedCardOut:
    who = principal(request)
    for_person = None
    if who.kind == "resident":
        if who.person_id is None:
            raise Forbidden("this account is not linked to a person")
        for_person = who.person_id
    linked = await service.verify_and_link(
        services(request),
        card_number=body.card_number,
        name=body.name,
        id_number=body.id_number,
        actor=who.actor,
        for_person=for_person,
        client_address=client_address(request),
    )
    return LinkedCardOut(
        person_id=linked.person_id,
        card=linked.card_masked,
        connector=linked.connector,
        member_code=linked.member_code,
        outcome=linked.outcome,
    )


@routes.get(
    "/api/v1/me/social-security",
    access=RESIDENT,
    response=SummaryOut,
    summary="My insurance enrolment in each city and my pension transfer (with my consent social_security_summary)",
    errors=(403, 404),
)
async def my_summary(request: web.Request) -> dict[str, Any]:
    who = principal(request)
    if who.person_id is None:
        raise Forbidden("this account is not linked to a person")
    items = await service.resident_summary(
        services(request), who.person_id, actor=who.actor, client_address=client_address(request)
    )
    return {"systems": service.as_json(items)}
