"""The fund centres' sandbox: one app serving both cities' centres under ``/cq`` (重庆住房公积金管理中心) and
``/cd`` (成都住房公积金管理中心), seeded with the demo residents; a connector's base URL picks its centre.

Beyond the shared fault switches (``connectors.framework.sandbox``), ``POST /_sandbox/{centre}/rental-changes``
changes a public-rental application the way the city's system would (the report joins that centre's feed).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

from aiohttp import web

from connectors.framework.sandbox import check_api_key, faults_of, make_app, shape_feed
from federation.demo import RESIDENTS

API_KEY = "sandbox-key"
CENTRES = {
    "cq": ("CQHF", "重庆住房公积金管理中心", "重庆", "CQ"),
    "cd": ("CDHF", "成都住房公积金管理中心", "成都", "SC"),
}
RENTAL_STATUSES = {"submitted", "under_review", "approved", "waiting_allocation", "allocated", "rejected", "withdrawn"}
# 陈静 keeps her Chongqing fund account while she applies for public-rental housing in Chengdu
MOVER = RESIDENTS[4]


@dataclasses.dataclass
class Centre:
    accounts: dict[str, dict[str, Any]]  # account number -> account
    holders: dict[str, list[str]]  # ID number -> account numbers
    applications: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    changes: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class State:
    centres: dict[str, Centre]
    credit: dict[str, list[dict[str, Any]]]  # ID number -> shared credit entries (both cities see the same)


STATE = web.AppKey("housing_state", State)


def _money(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01'))}"


def _account(i: int, prefix: str, card: str) -> dict[str, Any]:
    base = Decimal(6000 + 500 * i)
    monthly = base * Decimal("0.24")
    months = 60 + 12 * i
    first = dt.date(2026, 11, 1) - dt.timedelta(days=int(months * 30.4))
    return {
        "account_number": f"{prefix}GJJ{card[-6:]}",
        "status": "active",
        "employer": ["重庆长安汽车股份有限公司", "四川长虹电器股份有限公司", "成都地铁有限责任公司"][i % 3],
        "opened_on": f"{first.year}-{first.month:02d}-01",
        "deposit_base": _money(base),
        "personal_rate": "0.12",
        "employer_rate": "0.12",
        "monthly_deposit": _money(monthly),
        "balance": _money(monthly * months * Decimal("0.55")),
        "first_month": f"{first.year}-{first.month:02d}",
        "last_month": "2026-11",
        "months_deposited": months,
    }


def _seed() -> State:
    centres: dict[str, Centre] = {}
    for key, (*_, prefix) in CENTRES.items():
        accounts: dict[str, dict[str, Any]] = {}
        holders: dict[str, list[str]] = {}
        for i, r in enumerate(RESIDENTS):
            if not r.ss_card.startswith(prefix) or r.birth > "20060000":  # minors have no fund account
                continue
            acct = _account(i, prefix, r.ss_card)
            accounts[acct["account_number"]] = acct
            holders.setdefault(r.id_number, []).append(acct["account_number"])
        centres[key] = Centre(accounts, holders)
    state = State(centres, credit={})
    seeds = [
        ("cd", MOVER, "CD-GZF-2026-0005", "锦江区保利公园公租房", "under_review", None),
        ("cq", RESIDENTS[1], "CQ-GZF-2025-0002", "两江新区民心佳园", "waiting_allocation", 37),
        ("cd", RESIDENTS[6], "CD-GZF-2025-0007", "高新区蓝谷地公租房", "approved", None),
    ]
    for centre, r, number, estate, status, queue in seeds:
        _report(state, centre, number, r.id_number, estate, status, queue, submitted=dt.date(2025, 9, 15))
    state.credit[RESIDENTS[2].id_number] = [
        {"city": "重庆", "kind": "rent_arrears", "recorded_on": "2024-03-05", "resolved": True}
    ]
    return state


def _report(
    state: State,
    centre: str,
    number: str,
    id_number: str,
    estate: str,
    status: str,
    queue: int | None,
    *,
    submitted: dt.date | None = None,
) -> dict[str, Any]:
    c = state.centres[centre]
    app = c.applications.get(number)
    if app is None:
        app = {
            "application_no": number,
            "id_number": id_number,
            "city": CENTRES[centre][2],
            "estate": estate,
            "submitted_on": (submitted or dt.date.today()).isoformat(),
        }
        c.applications[number] = app
    app.update(status=status, queue_position=queue, updated_at=dt.datetime.now(dt.UTC).isoformat())
    change = {"seq": (c.changes[-1]["seq"] if c.changes else 0) + 1, **app}
    c.changes.append(change)
    return change


def _error(code: str, status: int) -> web.Response:
    return web.json_response({"error": code}, status=status)


async def _json(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _centre(request: web.Request) -> Centre | None:
    return request.app[STATE].centres.get(request.match_info["centre"])


async def _guarded(request: web.Request) -> tuple[Centre | None, dict[str, Any] | None, web.Response | None]:
    if (denied := check_api_key(request, API_KEY)) is not None:
        return None, None, denied
    centre = _centre(request)
    if centre is None:
        return None, None, _error("not_found", 404)
    return centre, await _json(request), None


async def accounts_query(request: web.Request) -> web.Response:
    centre, body, denied = await _guarded(request)
    if denied is not None:
        return denied
    assert centre is not None
    if body is None or not isinstance(body.get("id_number"), str):
        return _error("invalid_request", 400)
    numbers = centre.holders.get(body["id_number"].strip().upper())
    if not numbers:
        return _error("person_not_found", 404)
    return web.json_response({"accounts": [centre.accounts[n] for n in numbers]})


async def deposits_query(request: web.Request) -> web.Response:
    centre, body, denied = await _guarded(request)
    if denied is not None:
        return denied
    assert centre is not None
    months = body.get("months", 12) if body else None
    if body is None or not isinstance(body.get("account_number"), str) or not isinstance(months, int):
        return _error("invalid_request", 400)
    if not 1 <= months <= 120:
        return _error("invalid_request", 400)
    acct = centre.accounts.get(body["account_number"])
    if acct is None:
        return _error("account_not_found", 404)
    year, month = map(int, acct["last_month"].split("-"))
    deposits = []
    for _ in range(min(months, acct["months_deposited"])):
        deposits.append({"month": f"{year}-{month:02d}", "amount": acct["monthly_deposit"], "kind": "regular"})
        year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    return web.json_response({"account_number": acct["account_number"], "deposits": deposits})


async def rental_credit(request: web.Request) -> web.Response:
    _, body, denied = await _guarded(request)
    if denied is not None:
        return denied
    if body is None or not isinstance(body.get("id_number"), str):
        return _error("invalid_request", 400)
    records = request.app[STATE].credit.get(body["id_number"].strip().upper(), [])
    level = "restricted" if any(not r["resolved"] for r in records) else "attention" if records else "good"
    return web.json_response({"level": level, "records": records})


async def rental_changes(request: web.Request) -> web.Response:
    if (denied := check_api_key(request, API_KEY)) is not None:
        return denied
    centre = _centre(request)
    if centre is None:
        return _error("not_found", 404)
    try:
        after = int(request.query.get("after", "0"))
        limit = max(1, min(1000, int(request.query.get("limit", "100"))))
    except ValueError:
        return _error("invalid_request", 400)
    page = [c for c in centre.changes if c["seq"] > after][:limit]
    latest = centre.changes[-1]["seq"] if centre.changes else 0
    shaped = shape_feed(page, faults_of(request.app), first_expected=bool(page) and page[0]["seq"] == after + 1)
    return web.json_response({"changes": shaped, "latest_seq": latest})


async def add_rental_change(request: web.Request) -> web.Response:
    """Sandbox control: an application changes (or a new one is filed, with ``id_number`` and ``estate``)."""
    centre_key = request.match_info["centre"]
    state = request.app[STATE]
    body = await _json(request) or {}
    if centre_key not in state.centres or body.get("status") not in RENTAL_STATUSES:
        return _error("invalid_request", 400)
    number = str(body.get("application_no", ""))
    known = state.centres[centre_key].applications.get(number)
    id_number = known["id_number"] if known else body.get("id_number")
    estate = known["estate"] if known else body.get("estate")
    if not number or not isinstance(id_number, str) or not isinstance(estate, str):
        return _error("invalid_request", 400)
    queue = body.get("queue_position")
    change = _report(
        state, centre_key, number, id_number, estate, body["status"], queue if isinstance(queue, int) else None
    )
    return web.json_response({k: v for k, v in change.items() if k != "id_number"}, status=201)


def create_app() -> web.Application:
    app = make_app()
    app[STATE] = _seed()
    app.router.add_post("/{centre}/v1/accounts/query", accounts_query)
    app.router.add_post("/{centre}/v1/deposits/query", deposits_query)
    app.router.add_post("/{centre}/v1/rental/credit", rental_credit)
    app.router.add_get("/{centre}/v1/rental/changes", rental_changes)
    app.router.add_post("/_sandbox/{centre}/rental-changes", add_rental_change)
    return app
