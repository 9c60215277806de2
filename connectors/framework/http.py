"""The one HTTP client every connector uses: timeouts, retries on transient errors only, a circuit breaker, a rate
limit, a size cap on bodies and pydantic validation of what comes back.

Transient (retried, with exponential backoff and full jitter): connect errors, timeouts, a connection dropped
mid-body, 502/503/504, and 429 (waiting its ``Retry-After``). Never retried: other 4xx (our request is wrong),
500 and other 5xx (the partner failed on this request; the next scheduled run tries again), and malformed bodies.
A call that ends in a failure counts once against the breaker, however many attempts it made.

Adapters never put personal data in a URL (paths and query strings end up in partners' access logs and in ours):
card and ID numbers go in JSON bodies. Log lines name the connector, the path and the status, never a body.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import json
import logging
import random
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from connectors.framework.config import ConnectorConfig
from connectors.framework.errors import BadResponse, CircuitOpen, ConnectorError, ConnectorUnreachable, PartnerRefused
from connectors.framework.resilience import CircuitBreaker, TokenBucket, backoff_delay

log = logging.getLogger(__name__)
M = TypeVar("M", bound=BaseModel)
TRANSIENT_STATUS = frozenset({429, 502, 503, 504})
CHUNK = 64 * 1024


@dataclasses.dataclass
class Runtime:
    """What one process keeps per connector between calls: its breaker and its bucket."""

    breaker: CircuitBreaker
    bucket: TokenBucket
    signature: tuple[Any, ...]


def new_runtime(config: ConnectorConfig) -> Runtime:
    return Runtime(
        CircuitBreaker(config.breaker_threshold, config.breaker_cooldown_s),
        TokenBucket(config.rate_per_s, config.burst),
        _signature(config),
    )


def _signature(config: ConnectorConfig) -> tuple[Any, ...]:
    return (config.breaker_threshold, config.breaker_cooldown_s, config.rate_per_s, config.burst)


def refresh_runtime(runtime: Runtime | None, config: ConnectorConfig) -> Runtime:
    """The runtime to use with ``config``: the same one while its policies are unchanged, a fresh one otherwise."""
    if runtime is not None and runtime.signature == _signature(config):
        return runtime
    fresh = new_runtime(config)
    if runtime is not None:  # the failures seen so far still count
        fresh.breaker.restore(runtime.breaker.state.value, runtime.breaker.failures, runtime.breaker.opened_at)
    return fresh


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Transient(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class ConnectorClient:
    """An open session to one partner: ``async with ConnectorClient(...) as c: await c.get_json(path, Model)``.

    ``sleep`` and ``rand`` are injectable so unit tests run the retry schedule without waiting.
    """

    def __init__(
        self,
        name: str,
        config: ConnectorConfig,
        runtime: Runtime,
        *,
        headers: Mapping[str, str] | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        rand: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.name = name
        self.config = config
        self.runtime = runtime
        self.headers = dict(headers or {})
        self.sleep = sleep
        self.rand = rand
        self.session: aiohttp.ClientSession | None = None
        self.calls = 0
        self.attempts = 0
        self.last_error: ConnectorError | None = None
        self.last_success_at: float | None = None
        self.connector: Any = None  # the LoadedConnector it serves, set by service.open_client

    async def __aenter__(self) -> ConnectorClient:
        timeout = aiohttp.ClientTimeout(
            total=self.config.read_timeout_s,
            connect=self.config.connect_timeout_s,
            sock_connect=self.config.connect_timeout_s,
        )
        self.session = aiohttp.ClientSession(timeout=timeout, headers=self.headers, raise_for_status=False)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    async def get_json(
        self, path: str, model: type[M], *, params: Mapping[str, str | int] | None = None, none_on: Collection[int] = ()
    ) -> M | None:
        return await self.request_json("GET", path, model, params=params, none_on=none_on)

    async def post_json(self, path: str, model: type[M], *, body: Any, none_on: Collection[int] = ()) -> M | None:
        return await self.request_json("POST", path, model, body=body, none_on=none_on)

    async def request_json(
        self,
        method: str,
        path: str,
        model: type[M],
        *,
        params: Mapping[str, str | int] | None = None,
        body: Any = None,
        none_on: Collection[int] = (),
    ) -> M | None:
        """Call the partner and validate its JSON answer as ``model``; ``None`` for a status in ``none_on`` (a
        partner's "no such card" is an answer, not a failure)."""
        breaker = self.runtime.breaker
        breaker.before_call(self.name)
        self.calls += 1
        try:
            result = await self._with_retries(method, path, model, params, body, frozenset(none_on))
        except PartnerRefused:
            breaker.success()  # the partner is up and answering; the request was wrong
            self.last_success_at = time.time()
            raise
        except CircuitOpen:
            raise
        except ConnectorError as e:
            breaker.failure()
            self.last_error = e
            raise
        except BaseException:
            breaker.release()
            raise
        breaker.success()
        self.last_success_at = time.time()
        self.last_error = None
        return result

    async def _with_retries(
        self,
        method: str,
        path: str,
        model: type[M],
        params: Mapping[str, str | int] | None,
        body: Any,
        none_on: frozenset[int],
    ) -> M | None:
        cfg = self.config
        for attempt in range(cfg.max_attempts):
            try:
                return await self._attempt(method, path, model, params, body, none_on)
            except _Transient as t:
                last = attempt + 1 >= cfg.max_attempts
                if t.retry_after is not None and t.retry_after > cfg.retry_after_cap_s:
                    raise ConnectorUnreachable(
                        f"connector {self.name}: {t.reason}, asked to wait {t.retry_after:.0f} s", path=path
                    ) from None
                if last:
                    raise ConnectorUnreachable(
                        f"connector {self.name}: {t.reason} after {cfg.max_attempts} attempt(s)", path=path
                    ) from None
                delay = backoff_delay(attempt, cfg.backoff_base_s, cfg.backoff_cap_s, self.rand)
                if t.retry_after is not None:
                    delay = max(delay, t.retry_after)
                log.warning(
                    "connector %s: %s %s: %s; retry %d in %.2f s", self.name, method, path, t.reason, attempt + 1, delay
                )
                await self.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover - max_attempts >= 1

    async def _attempt(
        self,
        method: str,
        path: str,
        model: type[M],
        params: Mapping[str, str | int] | None,
        body: Any,
        none_on: frozenset[int],
    ) -> M | None:
        assert self.session is not None, "use the client inside 'async with'"
        await self.runtime.bucket.acquire()
        self.attempts += 1
        url = self.config.base_url + path
        try:
            async with self.session.request(method, url, params=params, json=body) as resp:
                status = resp.status
                if status in TRANSIENT_STATUS:
                    raise _Transient(f"HTTP {status}", _retry_after(resp.headers.get("Retry-After")))
                if status in none_on:
                    return None
                if 400 <= status < 500:
                    raise PartnerRefused(
                        f"connector {self.name}: {method} {path} refused with HTTP {status}", partner_status=status
                    )
                if status >= 300:
                    raise ConnectorError(
                        f"connector {self.name}: {method} {path} failed with HTTP {status}", partner_status=status
                    )
                raw = await self._read(resp, path)
                ctype = resp.content_type
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as e:
            kind = "timed out" if isinstance(e, TimeoutError) else f"connection failed ({e.__class__.__name__})"
            raise _Transient(kind) from None
        return self._parse(raw, ctype, path, model)

    async def _read(self, resp: aiohttp.ClientResponse, path: str) -> bytes:
        cap = self.config.max_body_bytes
        if resp.content_length is not None and resp.content_length > cap:
            raise BadResponse(
                f"connector {self.name}: {path} announced a {resp.content_length} byte body, over the {cap} byte cap"
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(CHUNK):
            size += len(chunk)
            if size > cap:
                raise BadResponse(f"connector {self.name}: {path} sent a body over the {cap} byte cap")
            chunks.append(chunk)
        return b"".join(chunks)

    def _parse(self, raw: bytes, ctype: str, path: str, model: type[M]) -> M:
        if ctype != "application/json" and not ctype.endswith("+json"):
            raise BadResponse(f"connector {self.name}: {path} answered {ctype or 'no content type'}, not JSON")
        try:
            data = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            where = getattr(e, "pos", None)
            raise BadResponse(
                f"connector {self.name}: {path} sent invalid or truncated JSON"
                + (f" (at byte {where} of {len(raw)})" if where is not None else "")
            ) from None
        try:
            return model.model_validate(data)
        except ValidationError as e:
            problems = [
                f"{'.'.join(str(x) for x in err['loc']) or 'body'}: {err['type']}"
                for err in e.errors(include_url=False, include_input=False, include_context=False)[:5]
            ]
            raise BadResponse(
                f"connector {self.name}: {path} sent a payload of the wrong shape ({'; '.join(problems)})"
            ) from None
