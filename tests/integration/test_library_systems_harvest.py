"""The OAI-PMH harvest against the library sandbox over real HTTP: the happy path, deletions, expired resumption
tokens, every fault switch, runs killed mid-way. The invariant: whatever happens, the catalogue ends as one clean
harvest leaves it (each record once, its items once), and the watermark never passes data that is not committed."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import ClientSession
from sqlalchemy import func, select

from connectors.framework import service as connectors
from connectors.framework.errors import BadResponse, CircuitOpen, ConnectorUnreachable
from connectors.framework.models import Connector
from connectors.framework.sync import run_sync
from connectors.library_systems import sandbox as oai_sandbox
from connectors.library_systems import service as harvest
from connectors.library_systems.adapter import HttpOaiPmh
from library.catalog.models import BibRecordRow, ItemRow

NAME = "lib-test"
LIBRARY = "CDL"
RECORDS, DELETED = 300, 6
LIVE = RECORDS - DELETED
ITEMS = sum(len(oai_sandbox.marc_record(n).get_fields("852")) for n in range(LIVE))
LAST_STAMP = "2026-06-01T00:01:39Z"  # 300 records, three per second


@pytest.fixture
async def partner():
    async with oai_sandbox.started_app() as url:
        yield url


async def configure(svc, url: str, *, options: dict | None = None, **config) -> None:
    base = {
        "base_url": url + "/oai",
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.05,
        "read_timeout_s": 5.0,
        "max_attempts": 3,
        "options": {"holdings": "marc21_852", **(options or {})},
    }
    async with svc.db.uow() as uow:
        await connectors.configure(
            uow, svc, NAME, kind="library_systems", member_code=LIBRARY, config={**base, **config}, actor="test"
        )
        await uow.commit()


@pytest.fixture
async def world(demo, partner):
    await configure(demo, partner)
    return demo


async def sandbox_call(url: str, method: str, path: str, body: dict | None = None) -> dict:
    async with ClientSession() as s, s.request(method, url + path, json=body) as r:
        assert r.status in (200, 201), await r.text()
        return await r.json()


async def faults(url: str, **switches) -> None:
    await sandbox_call(url, "POST", "/_sandbox/faults", switches)


async def served(url: str) -> int:
    return (await sandbox_call(url, "GET", "/_sandbox/requests"))["served"]


async def catalogue(svc) -> dict[str, tuple[bool, str]]:
    async with svc.db.reader() as s:
        rows = await s.execute(
            select(BibRecordRow.control_number, BibRecordRow.deleted, BibRecordRow.content_hash).where(
                BibRecordRow.library == LIBRARY
            )
        )
        return {r.control_number: (r.deleted, r.content_hash) for r in rows}


async def items(svc) -> int:
    async with svc.db.reader() as s:
        q = select(func.count()).select_from(ItemRow).where(ItemRow.library == LIBRARY)
        return (await s.execute(q)).scalar_one()


async def row(svc) -> Connector:
    async with svc.db.reader() as s:
        found = await s.get(Connector, NAME)
        assert found is not None
        return found


async def expect_clean(svc) -> None:
    state = await catalogue(svc)
    assert len(state) == LIVE and not any(deleted for deleted, _ in state.values())
    assert await items(svc) == ITEMS
    assert (await row(svc)).watermark == LAST_STAMP


async def test_happy_path_harvests_every_record_with_its_items_and_a_rerun_changes_nothing(world):
    result = await run_sync(world, NAME, actor="test")
    assert (result["added"], result["deleted_unknown"], result["batches"]) == (LIVE, DELETED, 6)
    await expect_clean(world)
    state = await catalogue(world)
    async with world.db.reader() as s:
        titles = list((await s.execute(select(BibRecordRow.data["title"].as_string()))).scalars())
    assert any("红楼梦" in t for t in titles) and any("Sichuan cookery" in t for t in titles)

    again = await run_sync(world, NAME, actor="test")  # from the watermark, inclusive: the last second again
    assert again.get("added", 0) == again.get("updated", 0) == 0
    assert again["watermark"] == LAST_STAMP
    assert await catalogue(world) == state


async def test_a_record_deleted_at_the_library_is_withdrawn_and_its_items_go(world, partner):
    await run_sync(world, NAME, actor="test")
    await sandbox_call(partner, "POST", "/_sandbox/records/sbl000010/delete")
    await sandbox_call(partner, "POST", "/_sandbox/records", {"n": 11, "edition": 2})
    result = await run_sync(world, NAME, actor="test")
    assert result["withdrawn"] == 1 and result["updated"] == 2
    state = await catalogue(world)
    assert state["sbl000010"][0] is True and state["sbl000011"][0] is False
    async with world.db.reader() as s:
        left = await s.execute(select(func.count()).select_from(ItemRow).where(ItemRow.barcode.like("SBL000010%")))
        assert left.scalar_one() == 0
    again = await run_sync(world, NAME, actor="test")
    assert again.get("withdrawn", 0) == again.get("updated", 0) == 0 and again["unchanged"] == 1
    assert await catalogue(world) == state


async def test_an_expired_resumption_token_restarts_from_the_committed_watermark(world, partner, monkeypatch):
    real = HttpOaiPmh.resume
    calls = 0

    async def expiring(self, token, granularity):
        nonlocal calls
        calls += 1
        if calls == 3:
            await sandbox_call(partner, "POST", "/_sandbox/tokens/expire")
        return await real(self, token, granularity)

    monkeypatch.setattr(HttpOaiPmh, "resume", expiring)
    result = await run_sync(world, NAME, actor="test")
    assert result["restarted"] == 1
    await expect_clean(world)


async def test_transient_5xx_is_retried_within_the_run(world, partner):
    await faults(partner, status=503, times=2, retry_after=0)
    await run_sync(world, NAME, actor="test")
    await expect_clean(world)


async def test_the_circuit_opens_refuses_without_calling_and_closes_after_the_cool_down(world, partner):
    await configure(world, partner, max_attempts=2, breaker_threshold=2, breaker_cooldown_s=0.5)
    await faults(partner, status=502)
    for _ in range(2):
        with pytest.raises(ConnectorUnreachable):
            await run_sync(world, NAME, actor="test")
    r = await row(world)
    assert (r.circuit_state, r.last_error_code) == ("open", "connectors.unreachable")
    before = await served(partner)
    with pytest.raises(CircuitOpen):
        await run_sync(world, NAME, actor="test")
    assert await served(partner) == before
    assert (await row(world)).watermark is None and await catalogue(world) == {}
    await faults(partner)
    await asyncio.sleep(0.6)
    await run_sync(world, NAME, actor="test")
    assert (await row(world)).circuit_state == "closed"
    await expect_clean(world)


async def test_duplicates_and_out_of_order_pages_end_as_one_clean_run(world, partner):
    await faults(partner, duplicates=True, out_of_order=True)
    result = await run_sync(world, NAME, actor="test")
    assert result["duplicates"] == RECORDS and result["added"] == LIVE
    await expect_clean(world)


@pytest.mark.parametrize("mode", ["html", "truncated", "wrong_types", "huge"])
async def test_garbage_is_a_clear_connector_error_and_stores_nothing(world, partner, mode):
    await configure(world, partner, max_body_bytes=2**20, read_timeout_s=20)
    await faults(partner, malformed=mode)
    with pytest.raises(BadResponse):
        await run_sync(world, NAME, actor="test")
    assert await catalogue(world) == {}
    r = await row(world)
    assert (r.watermark, r.last_error_code) == (None, "connectors.bad_response")
    await faults(partner)
    await run_sync(world, NAME, actor="test")
    await expect_clean(world)


async def test_garbage_mid_harvest_keeps_the_committed_pages(world, partner, monkeypatch):
    real = HttpOaiPmh.resume
    calls = 0

    async def souring(self, token, granularity):
        nonlocal calls
        calls += 1
        if calls == 2:
            await faults(partner, malformed="wrong_types", times=1)
        return await real(self, token, granularity)

    monkeypatch.setattr(HttpOaiPmh, "resume", souring)
    with pytest.raises(BadResponse, match="record 1 has no identifier"):
        await run_sync(world, NAME, actor="test")
    assert len(await catalogue(world)) == 100 and (await row(world)).watermark == "2026-06-01T00:00:33Z"
    monkeypatch.setattr(HttpOaiPmh, "resume", real)
    await run_sync(world, NAME, actor="test")
    await expect_clean(world)


async def test_a_slow_partner_times_out_as_unreachable(world, partner):
    await configure(world, partner, read_timeout_s=0.2, max_attempts=2)
    await faults(partner, latency_s=1.0)
    with pytest.raises(ConnectorUnreachable, match="timed out"):
        await run_sync(world, NAME, actor="test")
    assert (await row(world)).watermark is None


async def test_a_run_killed_mid_way_then_run_again_ends_as_one_clean_run(world, monkeypatch):
    real = harvest.apply_page
    calls = 0

    async def dying(uow, page, **kw):
        nonlocal calls
        calls += 1
        counts = await real(uow, page, **kw)
        if calls == 3:  # inside the third page's unit of work, after its records were stored
            raise RuntimeError("worker killed")
        return counts

    monkeypatch.setattr(harvest, "apply_page", dying)
    with pytest.raises(RuntimeError):
        await run_sync(world, NAME, actor="test")
    assert len(await catalogue(world)) == 100  # two pages, committed with their watermark; the third rolled back
    assert (await row(world)).watermark == "2026-06-01T00:00:33Z"
    monkeypatch.setattr(harvest, "apply_page", real)
    result = await run_sync(world, NAME, actor="test")
    assert result["added"] == LIVE - 100
    await expect_clean(world)


async def test_an_unordered_repository_moves_the_watermark_only_at_the_end_of_a_list(world, partner, monkeypatch):
    await configure(world, partner, options={"ordered": False})
    real = harvest.apply_page
    calls = 0

    async def dying(uow, page, **kw):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("worker killed")
        return await real(uow, page, **kw)

    monkeypatch.setattr(harvest, "apply_page", dying)
    with pytest.raises(RuntimeError):
        await run_sync(world, NAME, actor="test")
    assert (await row(world)).watermark is None and len(await catalogue(world)) == 100
    monkeypatch.setattr(harvest, "apply_page", real)
    await run_sync(world, NAME, actor="test")
    await expect_clean(world)


async def test_a_cancelled_run_then_run_again_ends_as_one_clean_run(world, partner):
    await faults(partner, latency_s=0.3)
    task = asyncio.create_task(run_sync(world, NAME, actor="test"))
    await asyncio.sleep(1.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await faults(partner)
    await run_sync(world, NAME, actor="test")
    await expect_clean(world)


async def test_a_day_granularity_repository_is_harvested_by_day(demo):
    async with oai_sandbox.started_app(granularity="YYYY-MM-DD", records=30, deleted=0) as url:
        await configure(demo, url)
        result = await run_sync(demo, NAME, actor="test")
        assert result["added"] == 30 and result["watermark"] == "2026-06-01"
        again = await run_sync(demo, NAME, actor="test")
        assert again["unchanged"] == 30 and again.get("added", 0) == 0


async def test_a_format_the_repository_cannot_disseminate_is_a_clear_error(world):
    from connectors.library_systems.errors import OaiError

    async with world.db.uow() as uow:
        row_ = await uow.session.get(Connector, NAME)
        row_.config = {**row_.config, "options": {"metadata_prefix": "marc21", "set": "nope"}}
        await uow.commit()
    with pytest.raises(OaiError, match="noSetHierarchy"):
        await run_sync(world, NAME, actor="test")
    assert (await row(world)).last_error_code == "connectors.oai_error"
