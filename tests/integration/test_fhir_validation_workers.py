"""Validation workers (real worker processes): a big load's problems are the ones this process would have found,
in the same order, whatever happens to the workers."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select

from federation.services import Services
from health.fhir import validation
from health.fhir.ingest import IngestRefused, ingest_bundle
from health.models import StoredResource
from tests.fixtures import fhir as fx

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def mixed(count: int = 200) -> list[Any]:
    """Valid results with broken ones spread over the whole load (so every part holds some)."""
    base = [fx.load(f"observation-{t}") for t in fx.VALUE_TYPES] + [fx.load("diagnosticreport-lab")]
    out: list[Any] = [copy.deepcopy(base[n % len(base)]) for n in range(count)]
    for n in range(3, count, 17):
        out[n]["status"] = "bogus"
    for n in range(5, count, 23):
        out[n]["effectiveDateTime"] = "2024-13-45"
    for n in range(7, count, 29):
        out[n]["colour"] = "blue"
    out[11] = "not an object"
    out[count - 2] = {"resourceType": "Encounter", "status": "finished"}
    out[count - 1] = {"resourceType": "Observation", "status": "final", "code": {"text": "x" * 5}}
    return out


@contextlib.asynccontextmanager
async def up(workers: int) -> AsyncIterator[validation.Validator]:
    """A validator whose workers are up, closed afterwards."""
    v = validation.Validator(workers)
    try:
        assert await v.ready()
        yield v
    finally:
        await v.close()


async def split_problems(v: validation.Validator, resources: list[Any]) -> tuple[int, list[validation.Problems]]:
    here, theirs = v.split(resources, NOW)
    mine = validation.problems_of(resources[:here], NOW)
    return here, mine + (await theirs if theirs is not None else [])


@pytest.mark.parametrize("workers", [1, 2])
async def test_workers_find_what_this_process_would(workers: int) -> None:
    resources = mixed()
    expected = validation.problems_of(resources, NOW)
    assert sum(1 for p in expected if p) > 20  # the load has broken resources in every part
    async with up(workers) as v:
        here, found = await split_problems(v, resources)
        assert here == len(resources) // (workers + 1)  # the others went to the workers
        assert found == expected


async def test_a_small_load_is_validated_here() -> None:
    async with up(1) as v:
        assert v.split(mixed(validation.SHARED_FROM - 1), NOW) == (validation.SHARED_FROM - 1, None)


async def test_until_the_workers_are_up_loads_are_validated_here() -> None:
    v = validation.Validator(1)
    try:
        resources = mixed()
        here, theirs = v.split(resources, NOW)  # starts the workers; they are not up yet
        assert (here, theirs) == (len(resources), None)
        assert await v.ready()
    finally:
        await v.close()


async def test_lost_workers_are_replaced() -> None:
    resources = mixed()
    async with up(2) as v:
        first, second = v._pool
        second.process.kill()
        await second.process.wait()
        here, found = await split_problems(v, resources)
        assert found == validation.problems_of(resources, NOW)
        assert v._pool == [first]
        assert await v.ready()  # the missing one is started again, though one is left
        assert len(v._pool) == 2 and second not in v._pool


async def test_a_part_pickle_refuses_is_validated_here() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(2000):
        node["x"] = {}
        node = node["x"]
    resources = mixed()
    resources[-1] = {"resourceType": "Observation", "extension": [deep]}
    async with up(1) as v:
        worker = v._pool[0]
        here, found = await split_problems(v, resources)
        assert here == len(resources)  # nothing sent
        assert found == validation.problems_of(resources, NOW)
        assert v._pool == [worker] and not worker.busy  # the worker is fine and free


async def test_a_load_that_fails_here_frees_the_worker() -> None:
    async with up(1) as v:
        worker = v._pool[0]
        _, theirs = v.split(mixed(), NOW)
        assert theirs is not None and worker.busy
        del theirs  # the caller failed before awaiting the workers' answers
        for _ in range(200):
            if not worker.busy:
                break
            await asyncio.sleep(0.05)
        assert not worker.busy and v._pool == [worker]
        assert (await split_problems(v, mixed()))[0] < len(mixed())


async def test_a_dead_worker_costs_time_not_answers(caplog: pytest.LogCaptureFixture) -> None:
    resources = mixed()
    expected = validation.problems_of(resources, NOW)
    async with up(1) as v:
        worker = v._pool[0]
        worker.process.kill()
        await worker.process.wait()
        with caplog.at_level(logging.WARNING, logger="health.fhir.validation"):
            here, found = await split_problems(v, resources)
        assert here < len(resources) and found == expected
        assert "validated in process" in caplog.text
        assert v._pool == []  # dropped; the next load starts another
        assert await v.ready()
        assert v._pool[0] is not worker
        assert (await split_problems(v, resources))[1] == expected


async def test_a_load_cancelled_while_the_workers_answer() -> None:
    resources = mixed()
    async with up(1) as v:
        worker = v._pool[0]
        _, theirs = v.split(resources, NOW)
        assert theirs is not None
        task = asyncio.ensure_future(theirs)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # what was left in its pipes is unknown: that worker is not used again
        assert worker not in v._pool
        assert await asyncio.wait_for(worker.process.wait(), 5) is not None
        assert await v.ready()
        assert (await split_problems(v, resources))[1] == validation.problems_of(resources, NOW)


async def test_without_workers_everything_is_validated_here(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def cannot(cls: Any) -> Any:
        raise OSError("no more processes")

    monkeypatch.setattr(validation._Worker, "start", classmethod(cannot))
    v = validation.Validator(1)
    with caplog.at_level(logging.WARNING, logger="health.fhir.validation"):
        assert not await v.ready()
    assert "could not be started" in caplog.text
    assert v.split(mixed(), NOW)[1] is None
    assert validation.Validator(0).split(mixed(), NOW)[1] is None
    await v.close()


async def test_the_service_stops_its_workers(tmp_path: Any) -> None:
    from federation.extensions import build_services
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, fhir_validation_workers=None)
    svc = build_services(settings)
    v = validation.validator(svc)
    assert v.workers == validation.default_workers()  # the production default: one beside a second core
    v.workers = 1
    assert await v.ready()
    processes = [w.process for w in v._pool]
    await svc.close()
    assert all(p.returncode is not None for p in processes)


async def big_transaction(patients: int = 40) -> dict[str, Any]:
    return fx.generated_transaction(patients=patients, per_patient=3)  # 5 entries per patient


async def stored(svc: Services) -> int:
    async with svc.db.reader() as s:
        return (await s.execute(select(func.count()).select_from(StoredResource))).scalar_one()


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many resources the workers validated, part by part."""
    counts: list[int] = []
    answer = validation._Worker.answer

    async def counted(self: validation._Worker, count: int) -> list[validation.Problems]:
        got = await answer(self, count)
        counts.append(count)
        return got

    monkeypatch.setattr(validation._Worker, "answer", counted)
    return counts


async def test_a_big_transaction_refused_for_an_entry_a_worker_checked(demo: Services, answered: list[int]) -> None:
    v = validation.validator(demo)
    v.workers = 1
    assert await v.ready()
    bundle = await big_transaction()
    last = len(bundle["entry"]) - 2  # an Observation near the end: in the worker's part
    bundle["entry"][last]["resource"]["effectiveDateTime"] = "2024-13-45"
    before = await stored(demo)
    with pytest.raises(IngestRefused) as caught:
        await ingest_bundle(demo, bundle, institution="CQH1", actor="apikey:CQH1:test")
    assert [i["expression"] for i in caught.value.issues] == [[f"Bundle.entry[{last}].resource.effectiveDateTime"]]
    assert answered == [100]  # the worker checked the second half of the 200 entries
    assert await stored(demo) == before
    bundle["entry"][last]["resource"]["effectiveDateTime"] = "2024-03-01T08:00:00+08:00"
    result = await ingest_bundle(demo, bundle, institution="CQH1", actor="apikey:CQH1:test")
    assert result.ok, result.issues()
    assert result.counts()["Observation"] == {"created": 120}
    assert await stored(demo) > before + 200


async def test_a_big_batch_refuses_the_same_entries_with_or_without_workers(
    demo: Services, answered: list[int]
) -> None:
    bundle = await big_transaction(30)  # patient n at 5n, its Observations at 5n+1..5n+3, its report at 5n+4
    bundle["type"] = "batch"
    for n in (6, 78, 142):  # one Observation this process checks, two a worker does
        bundle["entry"][n]["resource"]["status"] = "bogus"
    v = validation.validator(demo)
    v.workers = 1
    assert await v.ready()
    with_workers = await ingest_bundle(demo, copy.deepcopy(bundle), institution="CQH1", actor="apikey:CQH1:test")
    assert answered == [75]
    await v.close()
    v.workers = 0
    without = await ingest_bundle(demo, copy.deepcopy(bundle), institution="CQH1", actor="apikey:CQH1:test")
    # each broken Observation is refused, and so is the report that refers to it; nothing else
    refused = [(i.index, i.issues) for i in with_workers.items if not i.ok]
    assert [n for n, _ in refused] == [6, 9, 78, 79, 142, 144]
    assert refused == [(i.index, i.issues) for i in without.items if not i.ok]
    assert {i.outcome for i in without.items if i.ok} == {"unchanged"}
