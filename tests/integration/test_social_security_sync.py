"""The card status feed against the social-security sandbox over real HTTP: the happy path, every fault switch, a
run killed mid-way. The invariant: whatever happens, the credentials end as one clean run leaves them, each event
applied once, and the watermark never passes data that is not committed."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import ClientSession
from sqlalchemy import func, select

from connectors.framework import service as connectors
from connectors.framework.errors import BadResponse, CircuitOpen, ConnectorUnreachable, WatermarkMoved
from connectors.framework.models import Connector
from connectors.framework.sync import run_sync
from connectors.social_security import sandbox as ss_sandbox
from connectors.social_security import service as ss
from federation.audit.models import AuditEntry
from federation.demo import RESIDENTS
from federation.identity import service as identity
from federation.identity.models import Identifier, IdentifierType
from federation.members import service as members

NAME = "ss-test"
# lost, reissued (with a new number), cancelled, then the reissued card lost too, then one more lost
SCRIPT = [
    {"type": "lost", "card_number": RESIDENTS[0].ss_card},
    {"type": "reissued", "card_number": RESIDENTS[1].ss_card, "new_card_number": "CQ9000002"},
    {"type": "cancelled", "card_number": RESIDENTS[2].ss_card},
    {"type": "lost", "card_number": "CQ9000002"},
    {"type": "lost", "card_number": RESIDENTS[5].ss_card},
]
CLEAN = {
    RESIDENTS[0].ss_card: ("lost", None),
    RESIDENTS[1].ss_card: ("reissued", "CQ9000002"),
    RESIDENTS[2].ss_card: ("cancelled", None),
    "CQ9000002": ("lost", None),
    RESIDENTS[3].ss_card: ("active", None),
    RESIDENTS[5].ss_card: ("lost", None),
}


@pytest.fixture
async def partner():
    async with ss_sandbox.started_app() as url:
        yield url


async def configure(svc, url: str, **config) -> None:
    base = {"base_url": url, "backoff_base_s": 0.01, "backoff_cap_s": 0.05, "read_timeout_s": 3.0, "max_attempts": 3}
    async with svc.db.uow() as uow:
        await members.upsert(
            uow, members.NewInstitution("CQSI", "重庆市社会保险事务中心", "system", system_kind="social_security")
        )
        await connectors.configure(
            uow,
            svc,
            NAME,
            kind="social_security",
            member_code="CQSI",
            config={**base, **config},
            secrets={"api_key": ss_sandbox.API_KEY},
            actor="test",
        )
        await uow.commit()


@pytest.fixture
async def world(demo, partner):
    await configure(demo, partner)
    for event in SCRIPT:
        await sandbox_post(partner, "/_sandbox/card-events", event)
    return demo


async def sandbox_post(url: str, path: str, body: dict) -> dict:
    async with ClientSession() as s, s.post(url + path, json=body) as r:
        assert r.status in (200, 201), await r.text()
        return await r.json()


async def faults(url: str, **switches) -> None:
    await sandbox_post(url, "/_sandbox/faults", switches)


async def served(url: str) -> int:
    async with ClientSession() as s, s.get(url + "/_sandbox/requests") as r:
        return (await r.json())["served"]


async def cards(svc) -> dict[str, tuple[str, str | None]]:
    """Every social-security credential: status and the card that replaced it."""
    async with svc.db.reader() as s:
        rows = list(
            (
                await s.execute(select(Identifier).where(Identifier.type == IdentifierType.SOCIAL_SECURITY_CARD.value))
            ).scalars()
        )
        by_id = {r.id: identity.reveal(svc.cipher, r) for r in rows}
        return {by_id[r.id]: (r.status, by_id.get(r.replaced_by_id) if r.replaced_by_id else None) for r in rows}


async def row(svc) -> Connector:
    async with svc.db.reader() as s:
        found = await s.get(Connector, NAME)
        assert found is not None
        return found


async def audits(svc, action: str) -> int:
    async with svc.db.reader() as s:
        return (
            await s.execute(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action))
        ).scalar_one()


def expect_clean(state: dict[str, tuple[str, str | None]]) -> None:
    for card, want in CLEAN.items():
        assert state[card] == want, card


async def test_happy_path_applies_every_event_once_and_records_health(world):
    result = await run_sync(world, NAME, actor="test")
    assert result["applied"] == 5
    assert result["watermark"] == "5"
    expect_clean(await cards(world))
    assert await audits(world, "identity.credential_status") == 5
    assert await audits(world, "connectors.sync") == 1
    r = await row(world)
    assert (r.watermark, r.circuit_state, r.last_error) == ("5", "closed", None)
    assert r.last_success_at is not None and r.last_run_at is not None
    assert r.last_counts["applied"] == 5
    async with world.db.reader() as s:
        person = await identity.resolve_credential(
            s, world.cipher, identity.IdentifierInput(IdentifierType.ID_NUMBER, RESIDENTS[1].id_number)
        )
        owner = await identity.find_identifier(
            s, world.cipher, identity.IdentifierInput(IdentifierType.SOCIAL_SECURITY_CARD, "CQ9000002")
        )
    assert owner is not None and owner.person_id == person.id

    again = await run_sync(world, NAME, actor="test")  # a second run finds nothing new and changes nothing
    assert again.get("applied", 0) == 0 and again["watermark"] == "5"
    expect_clean(await cards(world))
    assert await audits(world, "identity.credential_status") == 5


async def test_transient_5xx_is_retried_within_the_run(world, partner):
    await faults(partner, status=503, times=2)
    result = await run_sync(world, NAME, actor="test")
    assert result["applied"] == 5
    expect_clean(await cards(world))


async def test_the_circuit_opens_refuses_without_calling_and_closes_after_the_cool_down(world, partner):
    await configure(world, partner, max_attempts=2, breaker_threshold=2, breaker_cooldown_s=0.5)
    await faults(partner, status=502)
    for _ in range(2):
        with pytest.raises(ConnectorUnreachable):
            await run_sync(world, NAME, actor="test")
    r = await row(world)
    assert (r.circuit_state, r.consecutive_failures, r.last_error_code) == ("open", 2, "connectors.unreachable")
    before = await served(partner)
    with pytest.raises(CircuitOpen):
        await run_sync(world, NAME, actor="test")
    assert await served(partner) == before
    assert (await row(world)).watermark is None  # nothing committed, nothing claimed
    await faults(partner)
    await asyncio.sleep(0.6)
    result = await run_sync(world, NAME, actor="test")
    assert result["applied"] == 5
    r = await row(world)
    assert (r.circuit_state, r.consecutive_failures, r.watermark) == ("closed", 0, "5")
    expect_clean(await cards(world))


async def test_duplicates_and_out_of_order_events_end_as_a_clean_run(world, partner):
    await configure(world, partner, page_size=3)
    await faults(partner, duplicates=True, out_of_order=True)
    result = await run_sync(world, NAME, actor="test")
    assert result["applied"] == 5 and result["duplicates"] >= 5
    expect_clean(await cards(world))
    assert await audits(world, "identity.credential_status") == 5


async def test_a_gap_waits_for_a_later_run_instead_of_skipping_ahead(world, partner):
    await configure(world, partner, page_size=2)
    await run_sync(world, NAME, actor="test")  # all five
    for event in [
        {"type": "lost", "card_number": RESIDENTS[6].ss_card},
        {"type": "lost", "card_number": RESIDENTS[7].ss_card},
    ]:
        await sandbox_post(partner, "/_sandbox/card-events", event)
    await faults(partner, gap=True)  # event 6 is missing from the feed, 7 is there
    result = await run_sync(world, NAME, actor="test")
    assert result.get("applied", 0) == 0 and result["waiting_for_gap"] == 1
    assert (await row(world)).watermark == "5"
    assert (await cards(world))[RESIDENTS[7].ss_card] == ("active", None)
    await faults(partner)
    assert (await run_sync(world, NAME, actor="test"))["applied"] == 2
    state = await cards(world)
    assert state[RESIDENTS[6].ss_card][0] == state[RESIDENTS[7].ss_card][0] == "lost"


@pytest.mark.parametrize("mode", ["html", "truncated", "wrong_types", "huge"])
async def test_garbage_is_a_clear_connector_error_and_changes_nothing(world, partner, mode):
    await configure(world, partner, max_body_bytes=2**20, read_timeout_s=20)
    before = await cards(world)
    await faults(partner, malformed=mode)
    with pytest.raises(BadResponse):
        await run_sync(world, NAME, actor="test")
    assert await cards(world) == before
    r = await row(world)
    assert (r.watermark, r.last_error_code) == (None, "connectors.bad_response")
    assert "CQ0000001" not in (r.last_error or "")
    await faults(partner)
    await run_sync(world, NAME, actor="test")
    expect_clean(await cards(world))


async def test_a_slow_partner_times_out_as_unreachable(world, partner):
    await configure(world, partner, read_timeout_s=0.2, max_attempts=2)
    await faults(partner, latency_s=1.0)
    with pytest.raises(ConnectorUnreachable, match="timed out"):
        await run_sync(world, NAME, actor="test")
    assert (await row(world)).watermark is None


async def test_a_run_killed_mid_way_then_run_again_ends_as_one_clean_run(world, partner, monkeypatch):
    await configure(world, partner, page_size=2)
    real = ss.apply_event
    calls = 0

    async def dying(uow, svc, event, *, actor):
        nonlocal calls
        calls += 1
        result = await real(uow, svc, event, actor=actor)
        if calls == 3:  # inside the second batch's unit of work, after one of its events was applied
            raise RuntimeError("worker killed")
        return result

    monkeypatch.setattr(ss, "apply_event", dying)
    with pytest.raises(RuntimeError):
        await run_sync(world, NAME, actor="test")
    assert (await row(world)).watermark == "2"  # the first batch, committed with its watermark
    state = await cards(world)
    assert state[RESIDENTS[2].ss_card] == ("active", None)  # event 3 was rolled back with its batch
    assert (await row(world)).last_error_code == "connectors.internal"

    monkeypatch.setattr(ss, "apply_event", real)
    result = await run_sync(world, NAME, actor="test")
    assert result["applied"] == 3 and result["watermark"] == "5"
    expect_clean(await cards(world))
    assert await audits(world, "identity.credential_status") == 5  # each event audited once


async def test_a_cancelled_run_then_run_again_ends_as_one_clean_run(world, partner):
    await configure(world, partner, page_size=1)
    await faults(partner, latency_s=0.3)
    task = asyncio.create_task(run_sync(world, NAME, actor="test"))
    await asyncio.sleep(0.8)  # a couple of batches in
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    mark = (await row(world)).watermark
    assert mark is None or 0 < int(mark) < 5
    await faults(partner)
    await run_sync(world, NAME, actor="test")
    expect_clean(await cards(world))
    assert await audits(world, "identity.credential_status") == 5


async def test_the_watermark_is_fenced_against_a_concurrent_run(world):
    async with world.db.uow() as uow:
        await connectors.advance_watermark(uow, NAME, None, "3")
        await uow.commit()
    with pytest.raises(WatermarkMoved):
        async with world.db.uow() as uow:
            await connectors.advance_watermark(uow, NAME, None, "2")
    assert (await row(world)).watermark == "3"


async def test_wrong_api_key_is_refused_without_retry(world, partner):
    async with world.db.uow() as uow:
        await connectors.configure(
            uow,
            world,
            NAME,
            kind="social_security",
            member_code="CQSI",
            config={"base_url": partner},
            secrets={"api_key": "wrong"},
            actor="test",
        )
        await uow.commit()
    from connectors.framework.errors import PartnerRefused

    with pytest.raises(PartnerRefused, match="401"):
        await run_sync(world, NAME, actor="test")
    assert (await row(world)).circuit_state == "closed"


async def test_secrets_are_encrypted_at_rest_and_never_audited(world):
    r = await row(world)
    assert ss_sandbox.API_KEY.encode() not in (r.secrets_enc or b"")
    async with world.db.reader() as s:
        q = select(AuditEntry).where(AuditEntry.action == "connectors.configured")
        entries = list((await s.execute(q)).scalars())
        loaded = await connectors.load(s, world, NAME)
    assert entries and all(ss_sandbox.API_KEY not in str(e.details) for e in entries)
    assert loaded.secrets.get("api_key") == ss_sandbox.API_KEY
    assert ss_sandbox.API_KEY not in repr(loaded)
