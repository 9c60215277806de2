"""A social-security system's sandbox: the partner API of README.md, seeded with the demo residents' cards.

Beyond the shared fault switches (``connectors.framework.sandbox``), ``POST /_sandbox/card-events`` makes a card
lost, cancelled or reissued the way the real system would (the event joins the feed with the next sequence number),
and ``GET /_sandbox/cards/{card_number}`` shows a card's status.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Callable
from typing import Any

from aiohttp import web

from connectors.framework.sandbox import check_api_key, faults_of, make_app, shape_feed
from federation.demo import RESIDENTS

API_KEY = "sandbox-key"
CITIES = {"CQ": "重庆", "SC": "成都"}
# 陈静 (Chongqing) is moving her pension to Chengdu: both systems report the transfer
TRANSFERS = {RESIDENTS[4].ss_card: ("in_progress", "重庆", "成都")}


@dataclasses.dataclass
class Card:
    number: str
    name: str
    id_number: str
    status: str = "active"
    replaced_by: str | None = None


@dataclasses.dataclass
class State:
    city: str | None
    cards: dict[str, Card]
    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)


STATE = web.AppKey("social_security_state", State)


def _seed(prefix: str | None) -> dict[str, Card]:
    return {
        r.ss_card: Card(r.ss_card, r.name, r.id_number)
        for r in RESIDENTS
        if prefix is None or r.ss_card.startswith(prefix)
    }


def _error(code: str, status: int) -> web.Response:
    return web.json_response({"error": code}, status=status)


async def _json(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def verify(request: web.Request) -> web.Response:
    if (denied := check_api_key(request, API_KEY)) is not None:
        return denied
    body = await _json(request)
    if body is None or not all(isinstance(body.get(k), str) for k in ("card_number", "name", "id_number")):
        return _error("invalid_request", 400)
    card = request.app[STATE].cards.get(body["card_number"].strip().upper())
    if card is None:
        return _error("card_not_found", 404)
    matches = card.name == body["name"].strip() and card.id_number == body["id_number"].strip().upper()
    return web.json_response(
        {"card_number": card.number, "status": card.status, "holder_matches": matches, "replaced_by": card.replaced_by}
    )


async def card_events(request: web.Request) -> web.Response:
    if (denied := check_api_key(request, API_KEY)) is not None:
        return denied
    try:
        after = int(request.query.get("after", "0"))
        limit = max(1, min(1000, int(request.query.get("limit", "100"))))
    except ValueError:
        return _error("invalid_request", 400)
    state = request.app[STATE]
    page = [e for e in state.events if e["seq"] > after][:limit]
    latest = state.events[-1]["seq"] if state.events else 0
    shaped = shape_feed(page, faults_of(request.app), first_expected=bool(page) and page[0]["seq"] == after + 1)
    return web.json_response({"events": shaped, "latest_seq": latest})


def _city_of(card: Card) -> str:
    return CITIES.get(card.number[:2], "重庆")


async def summary(request: web.Request) -> web.Response:
    if (denied := check_api_key(request, API_KEY)) is not None:
        return denied
    body = await _json(request)
    if body is None or not isinstance(body.get("id_number"), str):
        return _error("invalid_request", 400)
    state = request.app[STATE]
    cards = [c for c in state.cards.values() if c.id_number == body["id_number"].strip().upper()]
    if not cards:
        return _error("person_not_found", 404)
    card = cards[0]
    city = _city_of(card)
    enrolments = [
        {"city": city, "scheme": "城镇职工基本养老保险", "status": "active", "since": "2012-07"},
        {"city": city, "scheme": "城镇职工基本医疗保险", "status": "active", "since": "2012-07"},
    ]
    transfer: dict[str, Any] = {"status": "none", "from_city": None, "to_city": None, "updated_at": None}
    if card.number in TRANSFERS:
        status, src, dst = TRANSFERS[card.number]
        transfer = {"status": status, "from_city": src, "to_city": dst, "updated_at": "2026-11-20T09:30:00+08:00"}
    return web.json_response({"enrolments": enrolments, "pension_transfer": transfer})


async def add_event(request: web.Request) -> web.Response:
    """Sandbox control: a card goes lost, cancelled or reissued, and the feed gets the event."""
    body = await _json(request) or {}
    state = request.app[STATE]
    card = state.cards.get(str(body.get("card_number", "")).upper())
    kind = body.get("type")
    if card is None or kind not in ("lost", "cancelled", "reissued"):
        return _error("invalid_request", 400)
    new_number = body.get("new_card_number")
    if kind == "reissued":
        if not isinstance(new_number, str) or not new_number or new_number in state.cards:
            return _error("invalid_request", 400)
        state.cards[new_number] = Card(new_number, card.name, card.id_number)
        card.replaced_by = new_number
    card.status = kind
    event = {
        "seq": (state.events[-1]["seq"] if state.events else 0) + 1,
        "type": kind,
        "card_number": card.number,
        "new_card_number": new_number if kind == "reissued" else None,
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    state.events.append(event)
    return web.json_response(event, status=201)


async def show_card(request: web.Request) -> web.Response:
    card = request.app[STATE].cards.get(request.match_info["card_number"])
    if card is None:
        return _error("card_not_found", 404)
    return web.json_response(dataclasses.asdict(card) | {"id_number": None})


def create_app(city: str | None = None) -> web.Application:
    """The sandbox of one city's system (``CQ`` Chongqing, ``SC`` Sichuan/Chengdu cards) or, by default, of one
    system holding every demo card."""
    app = make_app()
    app[STATE] = State(city, _seed(city))
    app.router.add_post("/v1/cards/verify", verify)
    app.router.add_get("/v1/card-events", card_events)
    app.router.add_post("/v1/summaries", summary)
    app.router.add_post("/_sandbox/card-events", add_event)
    app.router.add_get("/_sandbox/cards/{card_number}", show_card)
    return app


# system -> (factory, port in the demo world: see demo.py)
FACTORIES: dict[str, tuple[Callable[[], web.Application], int | None]] = {
    "social_security": (create_app, None),
    "social_security_chongqing": (functools.partial(create_app, "CQ"), 8701),
    "social_security_sichuan": (functools.partial(create_app, "SC"), 8702),
}


def started_app(city: str | None = None):  # noqa: ANN201 - an async context manager yielding the base URL
    """This sandbox served on a free port (tests, the demo): ``async with started_app() as url: ...``."""
    from connectors.framework.sandbox import started

    return started(create_app(city))
