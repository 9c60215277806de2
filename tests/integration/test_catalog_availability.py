"""Availability changes reach the search index within 2 seconds, through the outbox and the workers.

Circulation does not exist yet; its catalogue side does: ``library.catalog.items.set_item_status`` changes a
copy's status and emits ``catalog.works_changed`` in the same unit of work. Here a copy goes on loan and comes
back, and the search's ``available_at`` (the filter ``available`` + ``library`` and each hit's field) must
follow within 2 seconds: once with the running app (its in-process runner relays the outbox), once with a real
Celery worker on the broker named by ``TWINCITY_TEST_BROKER_URL`` (marked ``broker``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from kombu import Connection
from sqlalchemy import func, select

from federation.app import SERVICES
from federation.db import OutboxMessage, utcnow
from federation.jobs import service as jobs
from federation.jobs.celery_app import CeleryDoorbell, make_celery, runtime_of
from federation.services import Services
from library.catalog import demo as demo_catalogue
from library.catalog import service as catalog
from library.catalog.items import BadItemStatus, ItemNotFound, set_item_status
from library.catalog.models import ItemRow, Work
from tests.conftest import TEST_BROKER_URL, make_settings

BUDGET_S = 2.0  # the promise
WATCH_S = 10.0  # how long we keep looking, to report how late a miss was
SANTI = "三体"  # a demo title every demo library holds

Search = Callable[[catalog.SearchRequest], Awaitable[Any]]


async def copies(svc: Services, library: str, title: str) -> tuple[str, list[str]]:
    """The work with this title, and the library's copies of it that are on the shelf."""
    async with svc.db.reader() as s:
        work_id = (await s.execute(select(Work.id).where(Work.title == title))).scalar_one()
        barcodes = (
            await s.execute(
                select(ItemRow.barcode).where(
                    ItemRow.work_id == work_id, ItemRow.library == library, ItemRow.status == "available"
                )
            )
        ).scalars()
        return work_id, sorted(barcodes)


async def set_status(svc: Services, library: str, barcodes: list[str], status: str) -> float:
    """Change the copies in one unit of work; returns the moment of the commit (monotonic)."""
    async with svc.db.uow() as uow:
        for barcode in barcodes:
            change = await set_item_status(uow, library, barcode, status)
            assert change.changed
        await uow.commit()
    return time.monotonic()


async def seconds_until(condition: Callable[[], Awaitable[bool]], since: float) -> float:
    """Seconds from ``since`` until ``condition`` holds (polled every 20 ms); fails after WATCH_S."""
    while True:
        if await condition():
            return time.monotonic() - since
        assert time.monotonic() - since < WATCH_S, f"the index did not follow in {WATCH_S}s"
        await asyncio.sleep(0.02)


async def shelf_state(search: Search, library: str) -> tuple[bool, bool]:
    """(is 三体 on the shelf at ``library`` per the filter, per the hit's ``available_at``)."""
    filtered = await search(catalog.SearchRequest(q=SANTI, libraries=(library,), available=True))
    plain = await search(catalog.SearchRequest(q=SANTI))
    hit = next(h for h in plain.hits if catalog.hit_view(h)["title"] == SANTI)
    return filtered.total > 0, library in catalog.hit_view(hit)["available_at"]


async def round_trip(svc: Services, search: Search, library: str) -> tuple[float, float]:
    """All of ``library``'s copies of 三体 go on loan, then one comes back; seconds until the index shows each."""
    _, barcodes = await copies(svc, library, SANTI)
    assert barcodes, f"{library} has no copy of {SANTI} on the shelf"
    assert await shelf_state(search, library) == (True, True)

    committed = await set_status(svc, library, barcodes, "on_loan")

    async def gone() -> bool:
        return await shelf_state(search, library) == (False, False)

    out = await seconds_until(gone, committed)
    others = [lib for lib in ("CQL", "SCL", "CDL") if lib != library]
    for other in others:  # the other libraries' copies are untouched
        assert (await search(catalog.SearchRequest(q=SANTI, libraries=(other,), available=True))).total == 1

    committed = await set_status(svc, library, barcodes[:1], "available")

    async def back() -> bool:
        return await shelf_state(search, library) == (True, True)

    return out, await seconds_until(back, committed)


# --------------------------------------------------------------------------- with the running app


async def test_a_loan_and_a_return_reach_the_index_within_two_seconds(client, demo):
    svc = client.app[SERVICES]  # the app's runner relays the outbox
    await demo_catalogue.load(svc, per_library=40)

    async def search(req: catalog.SearchRequest) -> Any:
        return await catalog.search(svc, req)

    out, back = await round_trip(svc, search, "CQL")
    assert out < BUDGET_S, f"on loan reached the index after {out:.2f}s"
    assert back < BUDGET_S, f"the return reached the index after {back:.2f}s"

    # over HTTP as a reader sees it: the work's copies at once (the database), and the search
    work_id, _ = await copies(svc, "CQL", SANTI)
    shown = await (await client.get(f"/api/v1/catalog/works/{work_id}")).json()
    cql = next(h for h in shown["holdings"] if h["library"] == "CQL")
    assert cql["available"] == 1 and any(i["status"] == "on_loan" for i in cql["items"])
    body = await (
        await client.get("/api/v1/catalog/search", params={"q": SANTI, "library": "CQL", "available": "true"})
    ).json()
    assert body["total"] == 1 and "CQL" in body["items"][0]["available_at"]


async def test_a_reload_of_the_marc_file_keeps_circulation_status(client, demo):
    svc = client.app[SERVICES]
    await demo_catalogue.load(svc, per_library=20)
    _, barcodes = await copies(svc, "SCL", SANTI)
    await set_status(svc, "SCL", barcodes, "on_loan")
    await demo_catalogue.load(svc, per_library=20)  # unchanged records: nothing touched
    assert (await copies(svc, "SCL", SANTI))[1] == []


async def test_status_changes_are_checked_and_only_real_changes_are_announced(demo):
    svc = demo
    await demo_catalogue.load(svc, per_library=20)
    _, (barcode, *_) = await copies(svc, "CDL", SANTI)

    async def events() -> int:
        async with svc.db.reader() as s:
            q = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.topic == "catalog.works_changed")
            return int((await s.execute(q)).scalar_one())

    before = await events()
    async with svc.db.uow() as uow:
        same = await set_item_status(uow, "cdl", barcode, "available")
        await uow.commit()
    assert not same.changed and await events() == before

    async with svc.db.uow() as uow:
        with pytest.raises(ItemNotFound):
            await set_item_status(uow, "CDL", "NO-SUCH-BARCODE", "on_loan")
        with pytest.raises(ItemNotFound):  # barcodes are per library
            await set_item_status(uow, "CQL", barcode, "on_loan")
        with pytest.raises(BadItemStatus):
            await set_item_status(uow, "CDL", barcode, "borrowed")

    async with svc.db.uow() as uow:
        change = await set_item_status(uow, "CDL", barcode, "on_loan")
    # left without commit: rolled back, and the event with it
    assert (change.before, change.after) == ("available", "on_loan")
    assert await events() == before
    async with svc.db.reader() as s:
        status = (await s.execute(select(ItemRow.status).where(ItemRow.barcode == barcode))).scalar_one()
    assert status == "available"


async def test_a_pass_over_many_changes_rebuilds_each_work_once_and_commits_the_index_once(demo, monkeypatch):
    from federation.jobs import outbox
    from library.catalog import indexing

    svc = demo
    await demo_catalogue.load(svc, per_library=20)
    await outbox.relay(svc)  # the load's own events, if any are left

    async def index_agrees() -> bool:
        for library in ("CQL", "SCL", "CDL"):
            req = catalog.SearchRequest(libraries=(library,), available=True, limit=1000)
            found = {h.id for h in (await catalog.search(svc, req)).hits}
            async with svc.db.reader() as s:
                q = select(ItemRow.work_id).where(ItemRow.library == library, ItemRow.status == "available")
                if found != set((await s.execute(q)).scalars()):
                    return False
        return True

    assert await index_agrees()
    async with svc.db.reader() as s:
        q = select(ItemRow.library, ItemRow.barcode, ItemRow.work_id).where(ItemRow.status == "available")
        lent = (await s.execute(q.order_by(ItemRow.barcode).limit(30))).all()
    for library, barcode, _ in lent:  # thirty commits, thirty events
        await set_status(svc, library, [barcode], "on_loan")
    assert not await index_agrees()

    refreshes: list[str] = []
    built: list[str] = []
    real_refresh, real_documents = svc.search.refresh, indexing.documents

    async def refresh(index: str) -> None:
        refreshes.append(index)
        await real_refresh(index)

    async def documents(session, work_ids, batch=None):  # noqa: ANN001, ANN202
        built.extend(work_ids)
        return await real_documents(session, work_ids, batch)

    monkeypatch.setattr(svc.search, "refresh", refresh)
    monkeypatch.setattr(indexing, "documents", documents)
    assert await outbox.relay(svc) == 30
    assert refreshes == [indexing.INDEX]
    assert sorted(built) == sorted({w for _, _, w in lent})  # each work once, however many of its copies moved
    assert await index_agrees()


async def test_under_a_stream_of_loans_the_index_stays_within_two_seconds(client, demo):
    """Ten desks change copies' status as fast as they can for three seconds, each change its own commit and
    event: the relay must keep up, not fall behind by the length of the stream."""
    from federation.jobs import outbox

    svc = client.app[SERVICES]  # the app's runner relays the outbox
    await demo_catalogue.load(svc, per_library=40)
    async with svc.db.reader() as s:
        q = select(ItemRow.library, ItemRow.barcode).where(ItemRow.status == "available").order_by(ItemRow.barcode)
        shelf = (await s.execute(q)).all()
    desks = 10
    stop_at = time.monotonic() + 3.0
    changes = 0
    lags: list[float] = []

    async def desk(n: int) -> None:
        nonlocal changes
        mine = shelf[n::desks]
        status = "on_loan"
        while time.monotonic() < stop_at:
            for library, barcode in mine:
                await set_status(svc, library, [barcode], status)
                changes += 1
            status = "available" if status == "on_loan" else "on_loan"

    async def watch() -> None:
        while time.monotonic() < stop_at:
            async with svc.db.reader() as s:
                q = select(func.min(OutboxMessage.created_at)).where(OutboxMessage.published_at.is_(None))
                oldest = (await s.execute(q)).scalar_one()
            lags.append(0.0 if oldest is None else (utcnow() - oldest).total_seconds())
            await asyncio.sleep(0.1)

    await asyncio.gather(*(desk(n) for n in range(desks)), watch())
    ended = time.monotonic()
    assert changes >= 100, f"only {changes} changes: the stream did not load the relay"
    assert max(lags) < BUDGET_S, f"the index fell {max(lags):.2f}s behind during {changes} changes"

    async def caught_up() -> bool:
        return await outbox.pending(svc) == 0

    behind = await seconds_until(caught_up, ended)
    assert behind < BUDGET_S, f"the last of {changes} changes reached the index {behind:.2f}s after the stream"


# --------------------------------------------------------------------------- with a Celery worker

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture
def broker_url() -> str:
    """The broker's URL if it answers; otherwise skip (a developer's machine) or fail (CI)."""
    url = TEST_BROKER_URL
    if not url:
        if IN_CI:
            pytest.fail("CI runs the broker tests: set TWINCITY_TEST_BROKER_URL")
        pytest.skip("TWINCITY_TEST_BROKER_URL is not set")
    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=3)
    except Exception as e:  # noqa: BLE001 - any failure to connect means the broker is not there
        if IN_CI:
            pytest.fail(f"the broker at {url} is unreachable in CI: {e!r}")
        pytest.skip(f"no broker at {url}: {e!r}")
    return url


@contextlib.contextmanager
def celery_worker(app: Celery) -> Iterator[None]:
    """A real worker (solo pool, in a thread of this process) on the app's own queue; its runtime closed after."""
    try:
        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            yield
    finally:
        closer = threading.Thread(target=runtime_of(app).close)
        closer.start()
        closer.join(10)
        with contextlib.suppress(Exception), app.connection_for_write() as conn:
            conn.default_channel.queue_delete(app.conf.task_default_queue)


@pytest.mark.broker
async def test_through_a_celery_worker_a_loan_reaches_the_index_within_two_seconds(
    demo, settings, tmp_path, broker_url
):
    # the worker builds its own services from the same settings (database, data directory, secrets), as
    # ``twincity worker`` does; it alone opens the search index: this process only writes rows and rings
    worker_settings = make_settings(tmp_path, database_url=settings.database_url, broker_url=broker_url)
    app = make_celery(worker_settings)
    app.conf.task_default_queue = f"twincity-test-{uuid.uuid4().hex[:12]}"
    app.conf.broker_connection_timeout = 3
    svc = demo
    svc.db.doorbell = CeleryDoorbell(app)
    files = demo_catalogue.write_files(tmp_path / "demo-catalogue", per_library=30)
    runtime = runtime_of(app)

    async def search(req: catalog.SearchRequest) -> Any:
        # on the worker's own loop and services (its index), from a thread: as a second process would read it
        return await asyncio.to_thread(runtime.run, catalog.search, req)

    with celery_worker(app):
        ids = []
        async with svc.db.uow() as uow:
            for f in files:
                params = {"path": str(f.path), "library": f.library, "format": f.fmt, "encoding": f.encoding,
                          "holdings": f.holdings, "actor": "test"}  # fmt: skip
                ids.append((await jobs.enqueue(uow, "catalog.ingest", params, created_by="test")).id)
            await uow.commit()
        deadline = time.monotonic() + 60
        for job_id in ids:
            while (job := await jobs.get(svc, job_id)).state not in ("succeeded", "failed"):
                assert time.monotonic() < deadline, f"the worker did not load the demo files: {job.state}"
                await asyncio.sleep(0.1)
            assert job.state == "succeeded", job.error
            assert job.result["rejected"] == 0 and job.result["added"] > 30

        out, back = await round_trip(svc, search, "SCL")
    assert out < BUDGET_S, f"on loan reached the index after {out:.2f}s"
    assert back < BUDGET_S, f"the return reached the index after {back:.2f}s"
