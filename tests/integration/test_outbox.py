"""The outbox: events committed with their change reach their handlers after commit, at least once, never lost."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from sqlalchemy import select, update

from federation.db import OutboxMessage, SilentDoorbell
from federation.extensions import build_services
from federation.jobs import outbox, service
from federation.jobs.runner import InProcessRunner

DEADLINE_S = 5.0


async def emit(svc, topic: str, **payload: Any) -> None:
    async with svc.db.uow() as uow:
        uow.emit(topic, **payload)
        await uow.commit()


async def rows(svc) -> list[OutboxMessage]:
    async with svc.db.reader() as s:
        return list((await s.execute(select(OutboxMessage).order_by(OutboxMessage.created_at))).scalars())


async def eventually(check, within_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s}s")
        await asyncio.sleep(0.02)


async def test_relay_hands_events_to_their_handlers_and_marks_them_published(svc):
    seen: list[tuple[str, dict[str, Any]]] = []

    async def first(svc, payload):
        seen.append(("first", payload))

    async def second(svc, payload):
        seen.append(("second", payload))

    svc.on_event("test.happened", first)
    svc.on_event("test.happened", second)
    await emit(svc, "test.happened", person_id="p1", n=1)
    await emit(svc, "test.unheard", n=2)  # no handler: published all the same
    assert await outbox.pending(svc) == 2

    assert await outbox.relay(svc) == 2
    assert seen == [("first", {"person_id": "p1", "n": 1}), ("second", {"person_id": "p1", "n": 1})]
    assert all(m.published_at is not None and m.attempts == 0 and m.last_error is None for m in await rows(svc))
    assert await outbox.pending(svc) == 0
    # published rows are not delivered again
    assert await outbox.relay(svc) == 0
    assert len(seen) == 2


async def test_events_are_relayed_in_order_of_creation(svc):
    order: list[int] = []

    async def record(svc, payload):
        order.append(payload["n"])

    svc.on_event("test.seq", record)
    for n in range(6):
        await emit(svc, "test.seq", n=n)
    assert await outbox.relay(svc) == 6
    assert order == list(range(6))


async def test_a_failing_handler_leaves_the_event_pending_until_it_is_fixed(svc):
    broken = True
    delivered: list[dict[str, Any]] = []

    async def handler(svc, payload):
        if broken:
            raise ConnectionError("search index unreachable")
        delivered.append(payload)

    svc.on_event("test.flaky", handler)
    await emit(svc, "test.flaky", n=7)

    assert await outbox.relay(svc) == 0
    (msg,) = await rows(svc)
    assert (msg.published_at, msg.attempts, msg.last_error) == (None, 1, "ConnectionError: search index unreachable")
    assert await outbox.relay(svc) == 0
    assert (await rows(svc))[0].attempts == 2

    broken = False
    assert await outbox.relay(svc) == 1
    (msg,) = await rows(svc)
    assert msg.published_at is not None and msg.attempts == 2
    assert delivered == [{"n": 7}]


async def test_a_message_that_failed_too_often_is_left_alone(svc):
    calls: list[Any] = []

    async def handler(svc, payload):
        calls.append(payload)

    svc.on_event("test.dead", handler)
    await emit(svc, "test.dead", n=1)
    async with svc.db.uow() as uow:
        await uow.session.execute(update(OutboxMessage).values(attempts=outbox.MAX_ATTEMPTS))
        await uow.commit()
    assert await outbox.relay(svc) == 0
    assert calls == []
    assert await outbox.pending(svc) == 1  # still counted: an operator sees it


async def test_an_event_committed_without_a_ring_is_found_by_the_runners_poll(svc):
    delivered: list[dict[str, Any]] = []

    async def handler(svc, payload):
        delivered.append(payload)

    svc.on_event("test.quiet", handler)
    runner = InProcessRunner(svc, poll_s=0.05)
    await runner.start()
    try:
        await asyncio.sleep(0.1)  # the runner's first pass is over: only its poll can find the next event
        # the process crashed between commit and ring: nobody rang
        assert isinstance(svc.db.doorbell, SilentDoorbell)
        await emit(svc, "test.quiet", n=1)

        async def published() -> bool:
            return await outbox.pending(svc) == 0

        await eventually(published)
    finally:
        await runner.stop(timeout_s=2)
    assert delivered == [{"n": 1}]


async def test_a_handler_may_write_through_its_own_unit_of_work(svc):
    # a handler that starts a job (or emits a follow-up event) writes; on SQLite it must not wait on the relay's lock
    async def start_job(svc, payload):
        async with svc.db.uow() as uow:
            await service.enqueue(uow, "test.followup", {"n": payload["n"]}, created_by="outbox")
            uow.emit("test.job_started", n=payload["n"])
            await uow.commit()

    followups: list[int] = []

    async def followup(svc, ctx):
        return {"n": ctx.params["n"]}

    async def job_started(svc, payload):
        followups.append(payload["n"])

    svc.on_event("test.trigger", start_job)
    svc.on_event("test.job_started", job_started)
    svc.job_handler("test.followup", followup)
    await emit(svc, "test.trigger", n=5)

    assert await asyncio.wait_for(outbox.relay(svc), DEADLINE_S) == 1
    assert await asyncio.wait_for(outbox.relay(svc), DEADLINE_S) == 1
    assert followups == [5]
    (job_id,) = await service.queued_ids(svc)
    assert await service.execute(svc, job_id) is True
    assert (await service.get(svc, job_id)).result == {"n": 5}


async def test_a_handler_that_relays_in_turn_neither_hangs_nor_redelivers(svc):
    # e.g. a handler that runs a job inline, and the job relays the events its batches committed
    handled: Counter[str] = Counter()

    async def outer(svc, payload):
        handled["outer"] += 1
        await emit(svc, "test.inner", n=payload["n"])
        await outbox.relay(svc)

    async def inner(svc, payload):
        handled["inner"] += 1

    svc.on_event("test.outer", outer)
    svc.on_event("test.inner", inner)
    await emit(svc, "test.outer", n=1)
    assert await asyncio.wait_for(outbox.relay(svc), DEADLINE_S) == 1
    assert await asyncio.wait_for(outbox.relay(svc), DEADLINE_S) == 0
    assert handled == {"outer": 1, "inner": 1}
    assert await outbox.pending(svc) == 0


async def test_racing_relays_deliver_each_message_exactly_once(svc, settings):
    # two workers (two engines, two connection pools) relay the same backlog at the same time
    other = build_services(settings)
    count = 30
    handled: Counter[int] = Counter()

    async def handler(svc, payload):
        handled[payload["n"]] += 1
        await asyncio.sleep(0.002)  # let the other relay in while this message is in hand

    for s in (svc, other):
        s.on_event("test.race", handler)
    async with svc.db.uow() as uow:
        for n in range(count):
            uow.emit("test.race", n=n)
        await uow.commit()
    try:
        # passes of ten: on PostgreSQL each relay locks the oldest ten nobody else holds, so the three share the work
        published = await asyncio.wait_for(
            asyncio.gather(outbox.relay(svc, batch=10), outbox.relay(other, batch=10), outbox.relay(svc, batch=10)),
            DEADLINE_S,
        )
    finally:
        await other.close()
    assert handled == Counter(range(count)), {n: c for n, c in handled.items() if c != 1}
    assert sum(published) == count
    if not svc.db.is_sqlite:
        assert sum(1 for p in published if p) >= 2, f"no race happened: {published}"
    assert await outbox.pending(svc) == 0


async def test_a_batch_handler_gets_every_pending_event_of_its_topic_in_one_call(svc):
    batches: list[list[int]] = []
    singles: list[int] = []

    async def many(svc, payloads):
        batches.append([p["n"] for p in payloads])

    async def one(svc, payload):
        singles.append(payload["n"])

    svc.on_events("test.many", many)
    svc.on_event("test.one", one)
    for n in range(8):  # the two topics interleaved, each event committed on its own
        await emit(svc, "test.many" if n % 2 == 0 else "test.one", n=n)
    assert await outbox.relay(svc) == 8
    assert batches == [[0, 2, 4, 6]]  # once, in order of creation
    assert singles == [1, 3, 5, 7]
    assert await outbox.pending(svc) == 0
    assert await outbox.relay(svc) == 0
    assert batches == [[0, 2, 4, 6]]


async def test_a_topic_may_have_a_batch_handler_and_event_handlers(svc):
    seen: list[tuple[str, Any]] = []

    async def many(svc, payloads):
        seen.append(("many", [p["n"] for p in payloads]))

    async def one(svc, payload):
        seen.append(("one", payload["n"]))

    svc.on_events("test.both", many)
    svc.on_event("test.both", one)
    for n in range(3):
        await emit(svc, "test.both", n=n)
    assert await outbox.relay(svc) == 3
    assert seen == [("many", [0, 1, 2]), ("one", 0), ("one", 1), ("one", 2)]


async def test_one_bad_event_fails_alone_and_its_batch_is_delivered(svc):
    handled: list[int] = []
    after: list[int] = []

    async def many(svc, payloads):
        if any(p.get("bad") for p in payloads):
            raise ValueError("no such work")
        handled.extend(p["n"] for p in payloads)

    async def one(svc, payload):
        after.append(payload["n"])

    svc.on_events("test.batch", many)
    svc.on_event("test.batch", one)
    for n in range(5):
        await emit(svc, "test.batch", n=n, bad=n == 2)

    assert await outbox.relay(svc) == 4
    assert handled == [0, 1, 3, 4]  # each tried alone once the batch failed: only the bad one is refused
    assert after == [0, 1, 3, 4]  # a failed event's other handlers wait for its retry
    by_n = {m.payload["n"]: m for m in await rows(svc)}
    bad = by_n.pop(2)
    assert (bad.published_at, bad.attempts, bad.last_error) == (None, 1, "ValueError: no such work")
    assert all(m.published_at is not None and m.attempts == 0 and m.last_error is None for m in by_n.values())
    assert await outbox.pending(svc) == 1


async def test_a_pass_takes_at_most_a_batch_and_the_runner_comes_back_for_the_rest(svc):
    got: list[int] = []

    async def many(svc, payloads):
        got.extend(p["n"] for p in payloads)

    svc.on_events("test.backlog", many)
    async with svc.db.uow() as uow:
        for n in range(25):
            uow.emit("test.backlog", n=n)
        await uow.commit()
    assert await outbox.relay(svc, batch=10) == 10
    assert await outbox.pending(svc) == 15

    runner = InProcessRunner(svc, poll_s=60.0, batch=10)  # no poll in time: only coming back drains it
    await runner.start()
    try:

        async def drained() -> bool:
            return await outbox.pending(svc) == 0

        await eventually(drained)
    finally:
        await runner.stop(timeout_s=2)
    assert sorted(got) == list(range(25))


async def test_commits_that_ring_close_together_are_relayed_in_one_pass(svc):
    """Woken by a ring after a pass that was not full, the runner lingers, so the commits right behind the first
    are relayed with it: one pass, one call of a batch handler, instead of one per commit."""
    calls: list[list[int]] = []

    async def many(svc, payloads):
        calls.append([p["n"] for p in payloads])

    svc.on_events("test.burst", many)
    runner = InProcessRunner(svc, poll_s=60.0, linger_s=1.0)  # no poll in time: only the rings wake it
    svc.db.doorbell = runner
    await runner.start()
    try:
        await asyncio.sleep(0.05)  # the first pass (nothing pending) is over: the runner waits for a ring
        started = time.monotonic()
        for n in range(20):
            await emit(svc, "test.burst", n=n)  # each commit rings
        assert time.monotonic() - started < 1.0, "the commits took longer than the linger: the test proves nothing"

        async def published() -> bool:
            return await outbox.pending(svc) == 0

        await eventually(published)
    finally:
        await runner.stop(timeout_s=2)
    assert calls == [list(range(20))]
