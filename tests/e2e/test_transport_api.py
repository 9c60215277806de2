"""Transport through the whole application: linking my card, my summary only with consent (passes with remaining
rides, trips per month, never a single trip), and no card number, station or time of travel in the logs or the
audit trail in clear."""

from __future__ import annotations

import json
import logging

import pytest
from sqlalchemy import select

from connectors.framework.sandbox import started
from connectors.framework.sync import run_sync
from connectors.transport import sandbox as transport_sandbox
from federation.audit.models import AuditEntry
from federation.consent.service import Purpose
from federation.demo import RESIDENTS
from tests.conftest import token_for
from tests.housing_support import grant, sandbox_post
from tests.transport_support import configure_operators

ZHANG = RESIDENTS[0]
CARD = transport_sandbox.card_of(0, "cq")
STATIONS = ("观音桥站", "小什字站", "两路口站")


@pytest.fixture
async def partner():
    async with started(transport_sandbox.create_app()) as url:
        yield url


@pytest.fixture
async def world(demo, partner):
    await configure_operators(demo, partner)
    return demo


async def test_link_sync_and_summary_with_consent_and_nothing_in_clear(client, world, partner, caplog):
    caplog.set_level(logging.DEBUG)
    me = await token_for(client, ZHANG.id_number)
    resp = await client.post("/api/v1/me/transport/cards", json={"operator": "CQTC", "card_number": CARD}, headers=me)
    assert resp.status == 201, await resp.text()
    linked = await resp.json()
    assert linked["outcome"] == "linked" and linked["passes"] == 2 and linked["months"] == 2
    assert CARD not in json.dumps(linked)
    again = await client.post("/api/v1/me/transport/cards", json={"operator": "CQTC", "card_number": CARD}, headers=me)
    assert (await again.json())["outcome"] == "already_linked"

    resp = await client.get("/api/v1/me/transport", headers=me)
    assert resp.status == 403 and (await resp.json())["code"] == "transport.consent_required"
    await grant(world, ZHANG.id_number, Purpose.TRAVEL_SUMMARY, ["CQTC"])

    await sandbox_post(
        partner, "/_sandbox/cq/rides", {"card_number": CARD, "station": "两路口站", "at": "2026-12-05T18:00"}
    )
    await run_sync(world, "transport-cq", actor="test")
    resp = await client.get("/api/v1/me/transport", headers=me)
    assert resp.status == 200, await resp.text()
    text = await resp.text()
    body = json.loads(text)
    assert [c["card"][-4:] for c in body["cards"]] == [CARD[-4:]]
    current = {p["period"]: p for p in body["passes"]}
    assert (current["2026-12"]["rides_used"], current["2026-12"]["rides_remaining"]) == (3, 41)
    assert current["2026-11"]["rides_remaining"] == 22
    assert {(m["month"], m["trips"]) for m in body["monthly_trips"]} == {("2026-11", 22), ("2026-12", 3)}
    by = {o["member_code"]: o["status"] for o in body["operators"]}
    assert by == {"CQTC": "ok", "CDTC": "not_consented"}
    assert CARD not in text and not any(s in text for s in STATIONS) and "T08:" not in text

    async with world.db.reader() as s:
        entries = [e for e in (await s.execute(select(AuditEntry))).scalars() if e.action.startswith("transport.")]
    assert {e.action for e in entries} >= {
        "transport.card_linked",
        "transport.summary_synced",
        "transport.summary_read",
    }
    trail = json.dumps([e.details for e in entries], ensure_ascii=False)
    assert CARD not in trail and not any(s in trail for s in STATIONS)
    logged = caplog.text
    assert CARD not in logged and not any(s in logged for s in STATIONS) and ZHANG.id_number not in logged


async def test_a_card_of_someone_else_or_unknown_is_refused_and_nothing_is_linked(client, world):
    me = await token_for(client, ZHANG.id_number)
    other = transport_sandbox.card_of(1, "cq")
    resp = await client.post("/api/v1/me/transport/cards", json={"operator": "CQTC", "card_number": other}, headers=me)
    assert resp.status == 422 and (await resp.json())["code"] == "transport.card_mismatch"
    resp = await client.post("/api/v1/me/transport/cards", json={"operator": "CQTC", "card_number": "0"}, headers=me)
    assert resp.status == 404 and (await resp.json())["code"] == "transport.card_not_found"
    resp = await client.post("/api/v1/me/transport/cards", json={"operator": "XX", "card_number": CARD}, headers=me)
    assert resp.status == 404 and (await resp.json())["code"] == "transport.no_system"
    await grant(world, ZHANG.id_number, Purpose.TRAVEL_SUMMARY, None)
    body = await (await client.get("/api/v1/me/transport", headers=me)).json()
    assert body["cards"] == [] and body["passes"] == []


async def test_garbage_from_the_operator_is_a_clear_connector_error(client, world, partner):
    me = await token_for(client, ZHANG.id_number)
    await sandbox_post(partner, "/_sandbox/faults", {"malformed": "truncated"})
    resp = await client.post("/api/v1/me/transport/cards", json={"operator": "CQTC", "card_number": CARD}, headers=me)
    assert resp.status == 502 and (await resp.json())["code"] == "connectors.bad_response"
