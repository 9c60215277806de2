"""The breaker, the bucket and the backoff, on a fake clock: the state machine is a table, tested row by row."""

from __future__ import annotations

import pytest

from connectors.framework.errors import CircuitOpen
from connectors.framework.resilience import CircuitBreaker, CircuitState, TokenBucket, backoff_delay


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_backoff_is_full_jitter_under_an_exponential_cap():
    assert backoff_delay(0, 0.5, 30, lambda lo, hi: hi) == 0.5
    assert backoff_delay(3, 0.5, 30, lambda lo, hi: hi) == 4.0
    assert backoff_delay(10, 0.5, 30, lambda lo, hi: hi) == 30.0
    assert backoff_delay(10, 0.5, 30, lambda lo, hi: lo) == 0.0
    for attempt in range(8):
        assert 0 <= backoff_delay(attempt, 0.5, 30) <= min(30, 0.5 * 2**attempt)


def test_breaker_opens_after_n_consecutive_failures_and_a_success_resets_the_count():
    clock = Clock()
    b = CircuitBreaker(3, 10, clock=clock)
    b.before_call("x")
    b.failure()
    b.failure()
    b.success()  # not consecutive any more
    b.failure()
    b.failure()
    assert b.state is CircuitState.CLOSED
    b.failure()
    assert b.state is CircuitState.OPEN
    with pytest.raises(CircuitOpen):
        b.before_call("x")


def test_breaker_half_opens_after_the_cool_down_lets_one_trial_through_and_closes_on_success():
    clock = Clock()
    b = CircuitBreaker(1, 10, clock=clock)
    b.failure()
    clock.now += 9.9
    with pytest.raises(CircuitOpen):
        b.before_call("x")
    clock.now += 0.2
    b.before_call("x")  # the trial
    assert b.state is CircuitState.HALF_OPEN
    with pytest.raises(CircuitOpen):
        b.before_call("x")  # a second call while the trial is in flight
    b.success()
    assert b.state is CircuitState.CLOSED
    b.before_call("x")


def test_a_failed_trial_opens_it_again_for_a_whole_cool_down():
    clock = Clock()
    b = CircuitBreaker(5, 10, clock=clock)
    for _ in range(5):
        b.failure()
    clock.now += 10
    b.before_call("x")
    b.failure()
    assert b.state is CircuitState.OPEN
    clock.now += 9
    with pytest.raises(CircuitOpen):
        b.before_call("x")


def test_restored_state_carries_over_and_a_half_open_left_behind_waits_again():
    clock = Clock()
    b = CircuitBreaker(2, 10, clock=clock)
    b.restore("half_open", 4, 900.0)
    assert b.state is CircuitState.OPEN
    b.restore("open", 2, clock.now - 5)
    with pytest.raises(CircuitOpen):
        b.before_call("x")
    b.restore("closed", 1, None)
    b.failure()
    assert b.state is CircuitState.OPEN


def test_token_bucket_allows_a_burst_then_the_refill_rate():
    clock = Clock()
    bucket = TokenBucket(2.0, 3, clock=clock)
    assert [bucket.try_take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.try_take() == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.try_take() == 0.0
    clock.now += 100
    assert [bucket.try_take() for _ in range(3)] == [0.0, 0.0, 0.0]  # never more than the burst
    assert bucket.try_take() > 0


async def test_acquire_waits_for_the_refill():
    bucket = TokenBucket(50.0, 1)
    await bucket.acquire()
    import time

    t0 = time.monotonic()
    await bucket.acquire()
    assert time.monotonic() - t0 >= 0.015
