"""Sync cases every feed connector must pass against its sandbox over real HTTP (imported by
``test_housing_sync.py`` and ``test_transport_sync.py``, which define the ``system`` fixture).

The invariant: whatever the partner does (fails, stalls, sends garbage, repeats or reorders its feed, leaves a
hole) and wherever a run dies, the stored state ends as one clean run leaves it, each change applied and audited
once, and the watermark never passes data that is not committed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientSession, web
from sqlalchemy import func, select

from connectors.framework.errors import BadResponse, CircuitOpen, ConnectorUnreachable
from connectors.framework.models import Connector
from connectors.framework.sync import run_sync
from federation.audit.models import AuditEntry


@dataclasses.dataclass
class FeedSystem:
    """One connector under test: its sandbox app, how to configure it, read our state and the sandbox's truth."""

    connector: str
    app: web.Application
    url: str
    configure: Callable[..., Awaitable[None]]  # (svc, url, **config)
    stored: Callable[[Any], Awaitable[Any]]  # our state, comparable
    truth: Callable[[], Any]  # the same, computed from the sandbox
    audit_action: str
    apply_path: tuple[Any, str]  # (module, function name) a killed run breaks
    add_changes: Callable[[], Awaitable[None]]  # two more feed items
    clean_applied: int  # how many items one clean run applies


async def faults(url: str, **switches: Any) -> None:
    async with ClientSession() as s, s.post(url + "/_sandbox/faults", json=switches) as r:
        assert r.status == 200, await r.text()


async def served(url: str) -> int:
    async with ClientSession() as s, s.get(url + "/_sandbox/requests") as r:
        return int((await r.json())["served"])


async def row(svc: Any, name: str) -> Connector:
    async with svc.db.reader() as s:
        found = await s.get(Connector, name)
        assert found is not None
        return found


async def audits(svc: Any, action: str) -> int:
    async with svc.db.reader() as s:
        q = select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action)
        return int((await s.execute(q)).scalar_one())


async def test_happy_path_applies_everything_once(system, world):
    result = await run_sync(world, system.connector, actor="test")
    assert result["applied"] > 0
    assert await system.stored(world) == system.truth()
    assert await audits(world, system.audit_action) == result["applied"]
    r = await row(world, system.connector)
    assert (r.circuit_state, r.last_error, r.watermark) == ("closed", None, result["watermark"])
    again = await run_sync(world, system.connector, actor="test")
    assert again.get("applied", 0) == 0 and again["watermark"] == result["watermark"]
    assert await audits(world, system.audit_action) == result["applied"]
    await system.add_changes()
    assert (await run_sync(world, system.connector, actor="test"))["applied"] >= 2
    assert await system.stored(world) == system.truth()


async def test_transient_5xx_is_retried_within_the_run(system, world):
    await faults(system.url, status=503, times=2)
    result = await run_sync(world, system.connector, actor="test")
    assert result["applied"] > 0
    assert await system.stored(world) == system.truth()


async def test_the_circuit_opens_refuses_without_calling_and_closes(system, world):
    await system.configure(world, system.url, max_attempts=2, breaker_threshold=2, breaker_cooldown_s=0.5)
    await faults(system.url, status=502)
    for _ in range(2):
        with pytest.raises(ConnectorUnreachable):
            await run_sync(world, system.connector, actor="test")
    assert (await row(world, system.connector)).circuit_state == "open"
    before = await served(system.url)
    with pytest.raises(CircuitOpen):
        await run_sync(world, system.connector, actor="test")
    assert await served(system.url) == before
    assert (await row(world, system.connector)).watermark is None
    await faults(system.url)
    await asyncio.sleep(0.6)
    await run_sync(world, system.connector, actor="test")
    r = await row(world, system.connector)
    assert (r.circuit_state, r.consecutive_failures) == ("closed", 0)
    assert await system.stored(world) == system.truth()


async def test_duplicates_and_out_of_order_end_as_a_clean_run(system, world):
    clean = system.clean_applied
    await system.configure(world, system.url, page_size=3)
    await faults(system.url, duplicates=True, out_of_order=True)
    result = await run_sync(world, system.connector, actor="test")
    assert result["duplicates"] > 0
    assert await system.stored(world) == system.truth()
    assert await audits(world, system.audit_action) == clean


async def test_a_gap_waits_for_a_later_run(system, world):
    await system.configure(world, system.url, page_size=1000)
    first = await run_sync(world, system.connector, actor="test")
    await system.add_changes()
    await faults(system.url, gap=True)
    result = await run_sync(world, system.connector, actor="test")
    assert result.get("applied", 0) == 0 and result["waiting_for_gap"] >= 1
    assert (await row(world, system.connector)).watermark == first["watermark"]
    await faults(system.url)
    assert (await run_sync(world, system.connector, actor="test"))["applied"] >= 2
    assert await system.stored(world) == system.truth()


@pytest.mark.parametrize("mode", ["html", "truncated", "wrong_types", "huge"])
async def test_garbage_is_a_clear_connector_error_and_changes_nothing(system, world, mode):
    await system.configure(world, system.url, max_body_bytes=2**20, read_timeout_s=20)
    before = await system.stored(world)
    await faults(system.url, malformed=mode)
    with pytest.raises(BadResponse):
        await run_sync(world, system.connector, actor="test")
    assert await system.stored(world) == before
    r = await row(world, system.connector)
    assert (r.watermark, r.last_error_code) == (None, "connectors.bad_response")
    await faults(system.url)
    await run_sync(world, system.connector, actor="test")
    assert await system.stored(world) == system.truth()


async def test_a_slow_partner_times_out_as_unreachable(system, world):
    await system.configure(world, system.url, read_timeout_s=0.2, max_attempts=2)
    await faults(system.url, latency_s=1.0)
    with pytest.raises(ConnectorUnreachable, match="timed out"):
        await run_sync(world, system.connector, actor="test")
    assert (await row(world, system.connector)).watermark is None


async def test_a_run_killed_mid_way_then_run_again_ends_as_one_clean_run(system, world, monkeypatch):
    await system.configure(world, system.url, page_size=2)
    module, name = system.apply_path
    real = getattr(module, name)
    calls = 0

    async def dying(*args, **kwargs):
        nonlocal calls
        calls += 1
        result = await real(*args, **kwargs)
        if calls == 3:  # inside the second batch, after one of its items was applied
            raise RuntimeError("worker killed")
        return result

    monkeypatch.setattr(module, name, dying)
    with pytest.raises(RuntimeError):
        await run_sync(world, system.connector, actor="test")
    assert (await row(world, system.connector)).watermark == "2"
    monkeypatch.setattr(module, name, real)
    await run_sync(world, system.connector, actor="test")
    assert await system.stored(world) == system.truth()
    assert await audits(world, system.audit_action) == system.clean_applied
