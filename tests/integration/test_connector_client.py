"""The connector HTTP client against a real server with the sandbox's fault switches: what is retried, what is not,
when the breaker opens and closes, and that garbage (HTML, truncated JSON, wrong types, 100 MB) is a clear error."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import ClientSession, web
from pydantic import BaseModel

from connectors.framework.config import ConnectorConfig
from connectors.framework.errors import BadResponse, CircuitOpen, ConnectorError, ConnectorUnreachable, PartnerRefused
from connectors.framework.http import ConnectorClient, new_runtime
from connectors.framework.resilience import CircuitState
from connectors.framework.sandbox import make_app, started


class Thing(BaseModel):
    name: str
    count: int
    tags: list[str]


def app() -> web.Application:
    a = make_app()

    async def thing(request: web.Request) -> web.Response:
        return web.json_response({"name": "书", "count": 3, "tags": ["a", "b"]})

    async def missing(request: web.Request) -> web.Response:
        return web.json_response({"error": "no such thing"}, status=404)

    a.router.add_get("/thing", thing)
    a.router.add_get("/missing", missing)
    return a


@pytest.fixture
async def partner():
    async with started(app()) as url:
        yield url


async def set_faults(url: str, **faults) -> None:
    async with ClientSession() as s, s.post(f"{url}/_sandbox/faults", json=faults) as r:
        assert r.status == 200, await r.text()


async def served(url: str) -> int:
    async with ClientSession() as s, s.get(f"{url}/_sandbox/requests") as r:
        return (await r.json())["served"]


def config(url: str, **kw) -> ConnectorConfig:
    base = {"base_url": url, "backoff_base_s": 0.01, "backoff_cap_s": 0.05, "read_timeout_s": 2.0}
    return ConnectorConfig(**{**base, **kw})


def client(url: str, **kw) -> ConnectorClient:
    cfg = config(url, **kw)
    return ConnectorClient("test", cfg, new_runtime(cfg))


async def test_happy_path_validates_the_payload(partner):
    async with client(partner) as c:
        thing = await c.get_json("/thing", Thing)
    assert thing == Thing(name="书", count=3, tags=["a", "b"])


@pytest.mark.parametrize("status", [502, 503, 504, 429])
async def test_transient_statuses_are_retried_until_they_pass(partner, status):
    await set_faults(partner, status=status, times=2)
    async with client(partner, max_attempts=4) as c:
        assert (await c.get_json("/thing", Thing)).count == 3
        assert c.attempts == 3
    assert c.runtime.breaker.state is CircuitState.CLOSED


@pytest.mark.parametrize("status", [400, 401, 403, 422, 500])
async def test_other_errors_are_not_retried(partner, status):
    await set_faults(partner, status=status)
    async with client(partner, max_attempts=4) as c:
        with pytest.raises(ConnectorError) as e:
            await c.get_json("/thing", Thing)
        assert c.attempts == 1
    assert not isinstance(e.value, ConnectorUnreachable)
    assert isinstance(e.value, PartnerRefused) == (status < 500)


async def test_a_status_named_as_an_answer_is_none(partner):
    async with client(partner) as c:
        assert await c.get_json("/missing", Thing, none_on=(404,)) is None
        with pytest.raises(PartnerRefused):
            await c.get_json("/missing", Thing)


async def test_retry_after_is_waited_and_a_too_long_one_gives_up_at_once(partner):
    await set_faults(partner, status=429, retry_after=1, times=1)
    async with client(partner) as c:
        t0 = time.monotonic()
        await c.get_json("/thing", Thing)
        assert time.monotonic() - t0 >= 0.9
    await set_faults(partner, status=429, retry_after=3600)
    async with client(partner, max_attempts=5, retry_after_cap_s=60) as c:
        with pytest.raises(ConnectorUnreachable, match="asked to wait"):
            await c.get_json("/thing", Thing)
        assert c.attempts == 1


async def test_timeouts_are_retried_then_reported(partner):
    await set_faults(partner, latency_s=1.0)
    async with client(partner, read_timeout_s=0.2, max_attempts=2) as c:
        with pytest.raises(ConnectorUnreachable, match="timed out after 2 attempt"):
            await c.get_json("/thing", Thing)


async def test_connect_errors_are_retried_then_reported():
    async with client("http://127.0.0.1:9", max_attempts=3, connect_timeout_s=0.5) as c:
        with pytest.raises(ConnectorUnreachable, match="connection failed"):
            await c.get_json("/thing", Thing)
        assert c.attempts == 3


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("html", "text/html, not JSON"),
        ("truncated", "invalid or truncated JSON"),
        ("wrong_types", "wrong shape"),
        ("huge", "over the"),
    ],
)
async def test_garbage_is_a_clear_connector_error_and_never_retried(partner, mode, message):
    await set_faults(partner, malformed=mode)
    async with client(partner, max_attempts=3, max_body_bytes=2**20, read_timeout_s=20) as c:
        with pytest.raises(BadResponse, match=message) as e:
            await c.get_json("/thing", Thing)
        assert c.attempts == 1
    assert e.value.code == "connectors.bad_response"
    assert "书" not in e.value.detail  # the payload is never echoed


async def test_the_breaker_opens_refuses_without_calling_then_closes_after_the_cool_down(partner):
    await set_faults(partner, status=503)
    async with client(partner, max_attempts=1, breaker_threshold=2, breaker_cooldown_s=0.3) as c:
        for _ in range(2):
            with pytest.raises(ConnectorUnreachable):
                await c.get_json("/thing", Thing)
        assert c.runtime.breaker.state is CircuitState.OPEN
        before = await served(partner)
        with pytest.raises(CircuitOpen):
            await c.get_json("/thing", Thing)
        assert await served(partner) == before  # refused without reaching the partner
        await set_faults(partner)
        await asyncio.sleep(0.35)
        assert (await c.get_json("/thing", Thing)).count == 3  # the half-open trial
        assert c.runtime.breaker.state is CircuitState.CLOSED


async def test_the_rate_limit_spaces_calls(partner):
    async with client(partner, rate_per_s=20, burst=1) as c:
        t0 = time.monotonic()
        for _ in range(4):
            await c.get_json("/thing", Thing)
        assert time.monotonic() - t0 >= 0.14
