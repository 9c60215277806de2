"""Being safe against a slow or broken partner: backoff with full jitter, a circuit breaker and a token bucket.

All three are small, deterministic given their clock and random source, and know nothing of HTTP, so unit tests
drive them with a fake clock. One breaker and one bucket exist per connector per process (see
:func:`connectors.framework.http.runtime_for`); the breaker's state is copied to the connector's row after each
run so it is visible and survives a restart.
"""

from __future__ import annotations

import asyncio
import enum
import random
import time
from collections.abc import Callable

from connectors.framework.errors import CircuitOpen

Clock = Callable[[], float]


def backoff_delay(
    attempt: int, base_s: float, cap_s: float, rand: Callable[[float, float], float] = random.uniform
) -> float:
    """Full jitter (a uniform draw in ``[0, min(cap, base * 2**attempt)]``): many clients retrying after one outage
    spread out instead of hitting the partner again in step. ``attempt`` counts from 0."""
    return rand(0.0, min(cap_s, base_s * (2**attempt)))


class CircuitState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """closed → open after ``threshold`` consecutive failed calls → half-open once ``cooldown_s`` has passed (one
    trial call goes through) → closed on its success, open again on its failure."""

    def __init__(self, threshold: int, cooldown_s: float, *, clock: Clock = time.time) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.opened_at: float | None = None
        self._trial_in_flight = False

    def restore(self, state: str, failures: int, opened_at: float | None) -> None:
        """Take up the state another process (or an earlier run) left in the database."""
        self.state = CircuitState(state) if state in CircuitState.__members__.values() else CircuitState.CLOSED
        if self.state is CircuitState.HALF_OPEN:  # its trial's outcome was never recorded: wait a cool-down again
            self.state = CircuitState.OPEN
        self.failures = failures
        self.opened_at = opened_at if self.state is CircuitState.OPEN else None
        if self.state is CircuitState.OPEN and self.opened_at is None:
            self.opened_at = self.clock()

    def before_call(self, name: str) -> None:
        """Raise :class:`CircuitOpen` when this call must not reach the partner."""
        if self.state is CircuitState.OPEN:
            assert self.opened_at is not None
            waited = self.clock() - self.opened_at
            if waited < self.cooldown_s:
                raise CircuitOpen(
                    f"connector {name} is paused after {self.failures} consecutive failures; "
                    f"next try in {self.cooldown_s - waited:.1f} s",
                    retry_after_s=round(self.cooldown_s - waited, 1),
                )
            self.state = CircuitState.HALF_OPEN
            self._trial_in_flight = False
        if self.state is CircuitState.HALF_OPEN:
            if self._trial_in_flight:
                raise CircuitOpen(f"connector {name} is being tried again; wait for that call's outcome")
            self._trial_in_flight = True

    def success(self) -> None:
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.opened_at = None
        self._trial_in_flight = False

    def failure(self) -> None:
        self.failures += 1
        self._trial_in_flight = False
        if self.state is CircuitState.HALF_OPEN or self.failures >= self.threshold:
            self.state = CircuitState.OPEN
            self.opened_at = self.clock()

    def release(self) -> None:
        """A call that ended neither way (cancelled): let the next one be the trial."""
        self._trial_in_flight = False


class TokenBucket:
    """At most ``burst`` calls at once, refilled at ``rate_per_s``: we never flood a partner, even when a sync and
    many portal requests call it together."""

    def __init__(self, rate_per_s: float, burst: int, *, clock: Clock = time.monotonic) -> None:
        self.rate = rate_per_s
        self.burst = burst
        self.clock = clock
        self.tokens = float(burst)
        self.updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now

    def try_take(self) -> float:
        """Take a token if there is one (returns 0) or return how long until there will be one."""
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate

    async def acquire(self) -> None:
        async with self._lock:  # first come, first served
            # the wait is computed from the refill rate: no other task could signal a token sooner
            wait = self.try_take()
            while wait > 0:
                await asyncio.sleep(wait)
                wait = self.try_take()
