"""The unit of work: one transaction, its domain events stored with it, the doorbell rung only after commit."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from federation.db import OutboxMessage
from federation.jobs import service as jobs
from federation.jobs.models import Job


class RecordingDoorbell:
    """Records every ring and, at each ring, what a separate connection can already see committed."""

    def __init__(self, svc) -> None:
        self.svc = svc
        self.rings: list[tuple[str, str | None]] = []
        self.visible_at_ring: list[int] = []

    async def _visible(self) -> int:
        async with self.svc.db.reader() as s:
            outbox = (await s.execute(select(func.count()).select_from(OutboxMessage))).scalar_one()
            job_rows = (await s.execute(select(func.count()).select_from(Job))).scalar_one()
        return outbox + job_rows

    async def ring_outbox(self) -> None:
        self.visible_at_ring.append(await self._visible())
        self.rings.append(("outbox", None))

    async def ring_job(self, job_id: str) -> None:
        self.visible_at_ring.append(await self._visible())
        self.rings.append(("job", job_id))


class BrokenDoorbell:
    async def ring_outbox(self) -> None:
        raise ConnectionError("broker down")

    async def ring_job(self, job_id: str) -> None:
        raise ConnectionError("broker down")


async def _outbox(svc) -> list[OutboxMessage]:
    async with svc.db.reader() as s:
        return list((await s.execute(select(OutboxMessage).order_by(OutboxMessage.created_at))).scalars())


async def _jobs(svc) -> list[Job]:
    async with svc.db.reader() as s:
        return list((await s.execute(select(Job))).scalars())


@pytest.fixture
def bell(svc) -> RecordingDoorbell:
    bell = RecordingDoorbell(svc)
    svc.db.doorbell = bell
    return bell


async def test_committed_events_land_in_outbox_and_ring_after_commit(svc, bell):
    async with svc.db.uow() as uow:
        uow.emit("test.first", n=1)
        uow.emit("test.second", n=2, who="张伟")
        job = await jobs.enqueue(uow, "test.kind", {"x": 1}, created_by="test")
        await uow.session.flush()
        assert bell.rings == [], "rung before commit"
        assert await _outbox(svc) == [], "a reader sees uncommitted events"
        await uow.commit()

    rows = await _outbox(svc)
    assert sorted((m.topic, m.payload["n"]) for m in rows) == [("test.first", 1), ("test.second", 2)]
    assert {m.topic: m.payload for m in rows}["test.second"] == {"n": 2, "who": "张伟"}
    assert all(m.published_at is None and m.attempts == 0 for m in rows)
    assert bell.rings == [("outbox", None), ("job", job.id)]
    # at every ring, another connection already saw both events and the job: the ring came after commit
    assert bell.visible_at_ring == [3, 3]


async def test_commit_without_events_rings_nothing(svc, bell):
    async with svc.db.uow() as uow:
        uow.session.add(OutboxMessage(topic="written.directly", payload={}))
        await uow.commit()
    assert bell.rings == []
    assert [m.topic for m in await _outbox(svc)] == ["written.directly"]


async def test_leaving_without_commit_rolls_back(svc, bell):
    async with svc.db.uow() as uow:
        uow.emit("test.lost", n=1)
        await jobs.enqueue(uow, "test.kind", {}, created_by="test")
        await uow.session.flush()
    assert await _outbox(svc) == []
    assert await _jobs(svc) == []
    assert bell.rings == []


async def test_exception_inside_rolls_back_and_propagates(svc, bell):
    with pytest.raises(RuntimeError, match="boom"):
        async with svc.db.uow() as uow:
            uow.emit("test.lost", n=1)
            await jobs.enqueue(uow, "test.kind", {}, created_by="test")
            await uow.session.flush()
            raise RuntimeError("boom")
    assert await _outbox(svc) == []
    assert await _jobs(svc) == []
    assert bell.rings == []
    # the connection went back clean: the next unit of work commits normally
    async with svc.db.uow() as uow:
        uow.emit("test.after", n=2)
        await uow.commit()
    assert [m.topic for m in await _outbox(svc)] == ["test.after"]


async def test_failed_commit_stores_nothing_and_rings_nothing(svc, bell):
    async with svc.db.uow() as uow:
        uow.emit("test.ok", n=1)
        await uow.commit()
    existing = (await _outbox(svc))[0].id
    with pytest.raises(Exception):  # noqa: B017 - the driver's IntegrityError, whichever the engine
        async with svc.db.uow() as uow:
            uow.emit("test.lost", n=2)
            uow.session.add(OutboxMessage(id=existing, topic="dup", payload={}))
            await uow.commit()
    assert [m.topic for m in await _outbox(svc)] == ["test.ok"]
    assert bell.rings == [("outbox", None)]


async def test_a_doorbell_failure_after_commit_does_not_fail_the_commit(svc):
    svc.db.doorbell = BrokenDoorbell()
    async with svc.db.uow() as uow:
        uow.emit("test.kept", n=1)
        job = await jobs.enqueue(uow, "test.kind", {}, created_by="test")
        await uow.commit()  # the change is durable: a lost ring costs a delay (the workers poll), not an error
    assert [m.topic for m in await _outbox(svc)] == ["test.kept"]
    assert [j.id for j in await _jobs(svc)] == [job.id]


async def test_events_emitted_after_a_commit_need_their_own_commit(svc, bell):
    async with svc.db.uow() as uow:
        uow.emit("test.one", n=1)
        await uow.commit()
        uow.emit("test.two", n=2)
        await uow.commit()
    assert sorted(m.topic for m in await _outbox(svc)) == ["test.one", "test.two"]
    assert bell.rings == [("outbox", None), ("outbox", None)]
