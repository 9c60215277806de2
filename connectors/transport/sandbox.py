"""The transit operators' sandbox: one app serving Chongqing's (``/cq``, 重庆城市通卡) and Chengdu's (``/cd``,
天府通) card systems, seeded with the demo residents' cards, passes and rides; a connector's base URL picks one.

The sandbox keeps individual rides (station, time) the way an operator does, and serves only summaries: pass
states and monthly trip counts. ``POST /_sandbox/{operator}/rides`` records a ride; ``.../passes`` sells a pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from aiohttp import web

from connectors.framework.sandbox import check_api_key, faults_of, make_app, shape_feed
from federation.demo import RESIDENTS

API_KEY = "sandbox-key"
OPERATORS = {
    "cq": ("CQTC", "重庆城市通卡支付有限公司", "重庆", "CQ"),
    "cd": ("CDTC", "成都天府通金融服务股份有限公司", "成都", "SC"),
}
MOVER = RESIDENTS[4]  # 陈静 holds a card in each city


def card_of(resident_index: int, operator: str) -> str:
    prefix = {"cq": "3100", "cd": "5100"}[operator]
    return f"{prefix}{RESIDENTS[resident_index].ss_card[-6:]}"


@dataclasses.dataclass
class Operator:
    cards: dict[str, dict[str, Any]]  # number -> {"id_number", "status"}
    passes: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    counts: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)  # (card, month) -> trips
    rides: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # kept here, never served
    updates: list[dict[str, Any]] = dataclasses.field(default_factory=list)


STATE = web.AppKey("transport_state", dict)


def _emit(op: Operator, update: dict[str, Any]) -> dict[str, Any]:
    update = {"seq": (op.updates[-1]["seq"] if op.updates else 0) + 1, **update}
    op.updates.append(update)
    return update


def _sell(op: Operator, card: str, period: str, rides: int, product: str = "轨道交通月票") -> dict[str, Any]:
    pass_id = f"P{len(op.passes) + 1:05d}-{card[-4:]}"
    p = {"pass_id": pass_id, "card_number": card, "product": product, "period": period}
    p.update(rides_total=rides, rides_used=0, status="active")
    op.passes[pass_id] = p
    return _emit(op, {"type": "pass", **p})


def _ride(op: Operator, card: str, station: str, at: str) -> list[dict[str, Any]]:
    month = at[:7]
    op.rides.append({"card_number": card, "station": station, "at": at})
    op.counts[(card, month)] = op.counts.get((card, month), 0) + 1
    out = [_emit(op, {"type": "trip_count", "card_number": card, "month": month, "trips": op.counts[(card, month)]})]
    for p in op.passes.values():
        if p["card_number"] == card and p["period"] == month and p["status"] == "active":
            p["rides_used"] += 1
            if p["rides_used"] >= p["rides_total"]:
                p["status"] = "used_up"
            out.append(_emit(op, {"type": "pass", **p}))
            break
    return out


def _seed() -> dict[str, Operator]:
    ops: dict[str, Operator] = {}
    for key, (*_, prefix) in OPERATORS.items():
        cards = {
            card_of(i, key): {"id_number": r.id_number, "status": "active"}
            for i, r in enumerate(RESIDENTS)
            if r.ss_card.startswith(prefix) or r is MOVER
        }
        ops[key] = Operator(cards)
    cq, cd = ops["cq"], ops["cd"]
    zhang = card_of(0, "cq")
    _sell(cq, zhang, "2026-11", 44)
    for day in range(1, 23):
        _ride(cq, zhang, "观音桥站" if day % 2 else "小什字站", f"2026-11-{day:02d}T08:1{day % 10}:00+08:00")
    _sell(cq, zhang, "2026-12", 44)
    for day in (1, 2):
        _ride(cq, zhang, "观音桥站", f"2026-12-{day:02d}T08:12:00+08:00")
    chen = card_of(4, "cd")
    _sell(cd, chen, "2026-12", 30, "天府通地铁次票")
    _ride(cd, chen, "春熙路站", "2026-12-01T09:05:00+08:00")
    return ops


def _error(code: str, status: int) -> web.Response:
    return web.json_response({"error": code}, status=status)


async def _json(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _operator(request: web.Request) -> Operator | None:
    found: Operator | None = request.app[STATE].get(request.match_info["operator"])
    return found


async def verify(request: web.Request) -> web.Response:
    if (denied := check_api_key(request, API_KEY)) is not None:
        return denied
    op, body = _operator(request), await _json(request)
    if op is None:
        return _error("not_found", 404)
    if body is None or not all(isinstance(body.get(k), str) for k in ("card_number", "id_number")):
        return _error("invalid_request", 400)
    card = op.cards.get(body["card_number"].strip())
    if card is None:
        return _error("card_not_found", 404)
    matches = card["id_number"] == body["id_number"].strip().upper()
    return web.json_response(
        {"card_number": body["card_number"].strip(), "status": card["status"], "holder_matches": matches}
    )


async def snapshot(request: web.Request) -> web.Response:
    if (denied := check_api_key(request, API_KEY)) is not None:
        return denied
    op, body = _operator(request), await _json(request)
    if op is None:
        return _error("not_found", 404)
    if body is None or not isinstance(body.get("card_number"), str):
        return _error("invalid_request", 400)
    card = body["card_number"].strip()
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for u in op.updates:
        if u["card_number"] == card:
            latest[(u["type"], u.get("pass_id") or u.get("month", ""))] = u
    return web.json_response({"updates": sorted(latest.values(), key=lambda u: u["seq"])})


async def updates(request: web.Request) -> web.Response:
    if (denied := check_api_key(request, API_KEY)) is not None:
        return denied
    op = _operator(request)
    if op is None:
        return _error("not_found", 404)
    try:
        after = int(request.query.get("after", "0"))
        limit = max(1, min(1000, int(request.query.get("limit", "100"))))
    except ValueError:
        return _error("invalid_request", 400)
    page = [u for u in op.updates if u["seq"] > after][:limit]
    latest = op.updates[-1]["seq"] if op.updates else 0
    shaped = shape_feed(page, faults_of(request.app), first_expected=bool(page) and page[0]["seq"] == after + 1)
    return web.json_response({"updates": shaped, "latest_seq": latest})


async def add_ride(request: web.Request) -> web.Response:
    """Sandbox control: a ride at a station at a time (kept here); the feed gets the new counts."""
    op, body = _operator(request), await _json(request) or {}
    if op is None or body.get("card_number") not in op.cards:
        return _error("invalid_request", 400)
    if not isinstance(body.get("station"), str) or not isinstance(body.get("at"), str) or len(body["at"]) < 7:
        return _error("invalid_request", 400)
    return web.json_response({"updates": _ride(op, body["card_number"], body["station"], body["at"])}, status=201)


async def add_pass(request: web.Request) -> web.Response:
    op, body = _operator(request), await _json(request) or {}
    if op is None or body.get("card_number") not in op.cards:
        return _error("invalid_request", 400)
    if not isinstance(body.get("period"), str) or not isinstance(body.get("rides"), int):
        return _error("invalid_request", 400)
    return web.json_response(_sell(op, body["card_number"], body["period"], body["rides"]), status=201)


def create_app() -> web.Application:
    app = make_app()
    app[STATE] = _seed()
    app.router.add_post("/{operator}/v1/cards/verify", verify)
    app.router.add_post("/{operator}/v1/cards/snapshot", snapshot)
    app.router.add_get("/{operator}/v1/updates", updates)
    app.router.add_post("/_sandbox/{operator}/rides", add_ride)
    app.router.add_post("/_sandbox/{operator}/passes", add_pass)
    return app
