"""Transport over HTTP: a resident links their transit card and reads their travel summary (with consent)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from connectors.transport import service
from federation.app import client_address, principal, services
from federation.errors import Forbidden
from federation.web.routing import RESIDENT, Routes
from federation.web.schema import Input, Output

routes = Routes("transport")


class CardIn(Input):
    operator: str = Field(min_length=1, max_length=32, description="the operator's member code, e.g. CQTC")
    card_number: str = Field(min_length=1, max_length=64)


class LinkedCardOut(Output):
    operator: str
    card: str = Field(description="masked")
    outcome: str = Field(description="linked or already_linked")
    passes: int
    months: int


class OperatorOut(Output):
    connector: str
    member_code: str
    status: str


class CardOut(Output):
    operator: str
    card: str = Field(description="masked")
    status: str


class PassOut(Output):
    operator: str
    card: str
    product: str
    period: str
    status: str
    rides_total: int
    rides_used: int
    rides_remaining: int


class MonthOut(Output):
    operator: str
    month: str
    trips: int


class TransportOut(Output):
    operators: list[OperatorOut]
    cards: list[CardOut]
    passes: list[PassOut]
    monthly_trips: list[MonthOut]


def _person(request: web.Request) -> str:
    who = principal(request)
    if who.person_id is None:
        raise Forbidden("this account is not linked to a person")
    return who.person_id


@routes.post(
    "/api/v1/me/transport/cards",
    access=RESIDENT,
    body=CardIn,
    response=LinkedCardOut,
    status=201,
    summary="Link my transit card (the operator confirms it is registered to me)",
    errors=(403, 404, 409, 422, 502, 503),
)
async def link(request: web.Request, body: CardIn) -> LinkedCardOut:
    linked = await service.link_card(
        services(request),
        _person(request),
        operator=body.operator,
        card_number=body.card_number,
        actor=principal(request).actor,
        client_address=client_address(request),
    )
    return LinkedCardOut(
        operator=linked.operator,
        card=linked.card_masked,
        outcome=linked.outcome,
        passes=linked.passes,
        months=linked.months,
    )


@routes.get(
    "/api/v1/me/transport",
    access=RESIDENT,
    response=TransportOut,
    summary="My transit cards, passes with remaining rides and trips per month (with my consent travel_summary)",
    errors=(403, 404),
)
async def mine(request: web.Request) -> dict[str, Any]:
    return await service.resident_summary(
        services(request), _person(request), actor=principal(request).actor, client_address=client_address(request)
    )
