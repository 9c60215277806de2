"""The hospital pull against the FHIR sandbox over real HTTP: the happy path, every fault switch, runs killed
mid-way. The invariant: whatever happens, the stored results end as one clean run leaves them (each resource
once, at the version the hospital holds), and the watermark never passes data that is not committed."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from aiohttp import ClientSession
from sqlalchemy import func, select

from connectors.framework import service as connectors
from connectors.framework.errors import BadResponse, CircuitOpen, ConnectorUnreachable, PartnerRefused
from connectors.framework.models import Connector
from connectors.framework.sync import SyncRun, run_sync
from connectors.hospital_systems import sandbox as his
from connectors.hospital_systems import service as pull
from federation.audit.models import AuditEntry
from federation.demo import RESIDENTS
from federation.members.models import Institution
from health.models import StoredResource

NAME = "his-test"
HOSPITAL = "SCH2"
SEEDED = {"Patient": 6, "Observation": 300, "DiagnosticReport": 12, "ImagingStudy": 12}


@pytest.fixture
async def partner():
    async with his.started_app() as url:
        yield url


async def configure(svc, url: str, *, token: str = his.TOKEN, **config) -> None:
    base = {
        "base_url": url + "/fhir",
        "backoff_base_s": 0.01,
        "backoff_cap_s": 0.05,
        "read_timeout_s": 5.0,
        "max_attempts": 3,
        "page_size": 40,
    }
    async with svc.db.uow() as uow:
        await connectors.configure(
            uow,
            svc,
            NAME,
            kind="hospital_systems",
            member_code=HOSPITAL,
            config={**base, **config},
            secrets={"token": token},
            actor="test",
        )
        await uow.commit()


@pytest.fixture
async def world(demo, partner):
    await configure(demo, partner)
    return demo


async def sandbox_call(url: str, method: str, path: str, body: dict | None = None) -> dict:
    async with ClientSession() as s, s.request(method, url + path, json=body) as r:
        assert r.status in (200, 201), await r.text()
        return await r.json(content_type=None)


async def faults(url: str, **switches) -> None:
    await sandbox_call(url, "POST", "/_sandbox/faults", switches)


async def served(url: str) -> int:
    return (await sandbox_call(url, "GET", "/_sandbox/requests"))["served"]


async def stored(svc) -> dict[tuple[str, str], tuple[int, str | None, str | None]]:
    """The hospital's sandbox resources as stored: (type, id) -> (our version, person, the hospital's version)."""
    async with svc.db.reader() as s:
        q = (
            select(StoredResource)
            .join(Institution, Institution.id == StoredResource.institution_id)
            .where(Institution.code == HOSPITAL, StoredResource.source_id.like("his-%"))
        )
        rows = list((await s.execute(q)).scalars())
    out = {}
    for r in rows:
        ext = {e["url"]: e for e in r.body.get("meta", {}).get("extension", [])}
        source_version = next((e.get("valueString") for u, e in ext.items() if u.endswith("source-version-id")), None)
        out[(r.resource_type, r.source_id)] = (r.version, r.person_id, source_version)
    return out


def per_type(state: dict) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rtype, _ in state:
        counts[rtype] = counts.get(rtype, 0) + 1
    return counts


async def row(svc) -> Connector:
    async with svc.db.reader() as s:
        found = await s.get(Connector, NAME)
        assert found is not None
        return found


async def audits(svc, action: str) -> int:
    async with svc.db.reader() as s:
        q = select(func.count()).select_from(AuditEntry).where(AuditEntry.action == action)
        return (await s.execute(q)).scalar_one()


def expect_complete(state: dict) -> None:
    assert per_type(state) == SEEDED
    assert all(person is not None for _, person, _ in state.values())  # every result linked to its resident
    assert all(version == 1 for version, _, _ in state.values())  # each stored once: no version from a re-send


async def test_happy_path_pulls_every_type_patients_first_and_a_rerun_changes_nothing(world):
    result = await run_sync(world, NAME, actor="test")
    state = await stored(world)
    expect_complete(state)
    assert result["Patient.created"] == 6 and result["Observation.created"] == 300
    marks = json.loads(result["watermark"])
    assert list(marks) == ["Patient", "Observation", "ImagingStudy", "DiagnosticReport"]
    assert all(v.endswith("Z") for v in marks.values())
    r = await row(world)
    assert (r.watermark, r.circuit_state, r.last_error) == (result["watermark"], "closed", None)
    ingests = await audits(world, "health.ingest")
    assert ingests >= 4

    again = await run_sync(world, NAME, actor="test")  # nothing newer: no page stored, nothing audited
    assert again["watermark"] == result["watermark"]
    assert not any(k.endswith((".created", ".updated")) for k in again)
    assert await stored(world) == state
    assert await audits(world, "health.ingest") == ingests


async def test_a_new_version_at_the_hospital_arrives_at_the_next_run(world, partner):
    await run_sync(world, NAME, actor="test")
    changed = his.observation(7, 1, random.Random(1))
    await sandbox_call(partner, "POST", "/_sandbox/resources", changed)
    result = await run_sync(world, NAME, actor="test")
    assert result == {**result, "Observation.updated": 1}
    state = await stored(world)
    assert state[("Observation", "his-o00007")][0] == 2 and state[("Observation", "his-o00007")][2] == "2"


async def test_transient_5xx_is_retried_within_the_run(world, partner):
    await faults(partner, status=503, times=2, retry_after=0)
    await run_sync(world, NAME, actor="test")
    expect_complete(await stored(world))


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
    assert (await row(world)).watermark is None and await stored(world) == {}
    await faults(partner)
    await asyncio.sleep(0.6)
    await run_sync(world, NAME, actor="test")
    assert (await row(world)).circuit_state == "closed"
    expect_complete(await stored(world))


async def test_duplicates_across_pages_and_out_of_order_pages_end_as_one_clean_run(world, partner):
    await configure(world, partner, page_size=9)
    await faults(partner, duplicates=True, out_of_order=True)
    result = await run_sync(world, NAME, actor="test")
    assert result["duplicates"] >= 300
    assert result.get("Observation.unchanged", 0) > 0  # the repeated entry of the page before
    expect_complete(await stored(world))
    await faults(partner)
    again = await run_sync(world, NAME, actor="test")
    assert not any(k.endswith((".created", ".updated")) for k in again)


@pytest.mark.parametrize("mode", ["html", "truncated", "wrong_types", "huge"])
async def test_garbage_is_a_clear_connector_error_and_stores_nothing(world, partner, mode):
    await configure(world, partner, max_body_bytes=2**20, read_timeout_s=20)
    await faults(partner, malformed=mode)
    with pytest.raises(BadResponse):
        await run_sync(world, NAME, actor="test")
    assert await stored(world) == {}
    r = await row(world)
    assert (r.watermark, r.last_error_code) == (None, "connectors.bad_response")
    assert RESIDENTS[0].id_number not in (r.last_error or "")
    await faults(partner)
    await run_sync(world, NAME, actor="test")
    expect_complete(await stored(world))


async def test_garbage_mid_way_keeps_what_was_committed_and_resumes(world, partner):
    await configure(world, partner, page_size=50)
    await run_sync(world, NAME, actor="test")
    for n in range(120):  # new versions of 120 results: three pages
        await sandbox_call(partner, "POST", "/_sandbox/resources", his.observation(n, n % 6, random.Random(n)))
    mark = (await row(world)).watermark
    await faults(partner, malformed="truncated")
    with pytest.raises(BadResponse, match="truncated"):
        await run_sync(world, NAME, actor="test")
    assert (await row(world)).watermark == mark
    await faults(partner)
    result = await run_sync(world, NAME, actor="test")
    assert result["Observation.updated"] == 120


async def test_a_slow_partner_times_out_as_unreachable(world, partner):
    await configure(world, partner, read_timeout_s=0.2, max_attempts=2)
    await faults(partner, latency_s=1.0)
    with pytest.raises(ConnectorUnreachable, match="timed out"):
        await run_sync(world, NAME, actor="test")
    assert (await row(world)).watermark is None


async def test_a_run_killed_mid_way_then_run_again_ends_as_one_clean_run(world, partner, monkeypatch):
    await configure(world, partner, page_size=7)  # pages split the runs of equal instants
    real = pull.store
    calls = 0

    async def dying(svc, resources, *, institution, actor):
        nonlocal calls
        calls += 1
        if calls == 5:  # the fourth page of Observations, before it is stored
            raise RuntimeError("worker killed")
        return await real(svc, resources, institution=institution, actor=actor)

    monkeypatch.setattr(pull, "store", dying)
    with pytest.raises(RuntimeError):
        await run_sync(world, NAME, actor="test")
    r = await row(world)
    assert r.last_error_code == "connectors.internal"
    marks = json.loads(r.watermark)
    assert set(marks) == {"Patient", "Observation"}
    before = await stored(world)
    assert per_type(before) == {"Patient": 6, "Observation": 21}  # three committed pages, nothing of the fourth
    monkeypatch.setattr(pull, "store", real)
    await run_sync(world, NAME, actor="test")
    expect_complete(await stored(world))


async def test_a_crash_between_the_ingest_and_the_watermark_commit_is_harmless(world, partner, monkeypatch):
    await configure(world, partner, page_size=50)
    real = SyncRun.commit
    calls = 0

    async def dying(self, uow, new_watermark):
        nonlocal calls
        calls += 1
        if calls == 3:  # this page's results are committed by the ingest, its watermark is not
            raise RuntimeError("worker killed")
        await real(self, uow, new_watermark)

    monkeypatch.setattr(SyncRun, "commit", dying)
    with pytest.raises(RuntimeError):
        await run_sync(world, NAME, actor="test")
    behind = json.loads((await row(world)).watermark)
    assert per_type(await stored(world))["Observation"] == 100  # two pages stored; the watermark covers one
    monkeypatch.setattr(SyncRun, "commit", real)
    result = await run_sync(world, NAME, actor="test")
    assert result["Observation.unchanged"] >= 50  # the page stored twice is found unchanged
    expect_complete(await stored(world))
    assert json.loads(result["watermark"])["Observation"] > behind["Observation"]


async def test_a_cancelled_run_then_run_again_ends_as_one_clean_run(world, partner):
    await configure(world, partner, page_size=20)
    await faults(partner, latency_s=0.2)
    task = asyncio.create_task(run_sync(world, NAME, actor="test"))
    await asyncio.sleep(1.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await faults(partner)
    await run_sync(world, NAME, actor="test")
    expect_complete(await stored(world))


async def test_a_wrong_token_is_refused_without_retry(world, partner):
    await configure(world, partner, token="wrong")
    before = await served(partner)
    with pytest.raises(PartnerRefused, match="401"):
        await run_sync(world, NAME, actor="test")
    assert await served(partner) == before + 1
    assert (await row(world)).circuit_state == "closed"


async def test_a_connector_for_an_institution_that_is_not_a_hospital_stores_nothing(world, partner):
    async with world.db.uow() as uow:
        await connectors.configure(
            uow,
            world,
            NAME,
            kind="hospital_systems",
            member_code="CQL",
            config={"base_url": partner + "/fhir"},
            secrets={"token": his.TOKEN},
            actor="test",
        )
        await uow.commit()
    with pytest.raises(Exception, match="member hospital"):
        await run_sync(world, NAME, actor="test")
    assert (await row(world)).watermark is None


async def test_the_demo_connector_points_at_the_sandbox_port_and_loads_idempotently(demo):
    from connectors.hospital_systems import demo as his_demo

    assert await his_demo.load(demo) == {"hospital-system connectors": 1}
    assert await his_demo.load(demo) == {"hospital-system connectors": 0}
    async with demo.db.reader() as s:
        loaded = await connectors.load(s, demo, his_demo.NAME)
    assert loaded.config.base_url == f"http://127.0.0.1:{his_demo.PORT}/fhir" and loaded.member_code == "SCH2"


async def test_a_result_refused_for_a_late_patient_is_stored_once_the_patient_arrives(world, partner):
    await run_sync(world, NAME, actor="test")
    early = json.loads((await row(world)).watermark)["Observation"]
    await sandbox_call(partner, "POST", "/_sandbox/resources", his.observation(99999, 7, random.Random(3)))
    later = his.observation(99998, 1, random.Random(4))  # a known patient's result, changed just after
    await sandbox_call(partner, "POST", "/_sandbox/resources", later)

    first = await run_sync(world, NAME, actor="test")
    assert (first["Observation.refused"], first["Observation.created"], first["Observation.held_runs"]) == (1, 1, 1)
    state = await stored(world)
    assert ("Observation", "his-o99998") in state and ("Observation", "his-o99999") not in state  # the rest flows
    held = json.loads(first["watermark"])["Observation"]
    assert held == [early, 1]  # held below the refused result, not past it
    r = await row(world)
    assert (r.last_counts["Observation.refused"], r.last_counts["Observation.held_runs"]) == (1, 1)

    await sandbox_call(partner, "POST", "/_sandbox/resources", his._patient(7))  # the Patient lands a run later
    second = await run_sync(world, NAME, actor="test")
    assert second["Observation.created"] == 1 and "Observation.refused" not in second
    state = await stored(world)
    assert ("Patient", "his-p007") in state and state[("Observation", "his-o99999")][1] is not None
    marks = json.loads(second["watermark"])
    assert isinstance(marks["Observation"], str) and marks["Observation"] > early  # moved on, no hold left
    third = await run_sync(world, NAME, actor="test")
    assert not any(k.startswith("Observation.") for k in third)


async def test_a_permanently_refused_result_is_given_up_after_the_retries_and_named_in_the_health(world, partner):
    await configure(world, partner, options={"refusal_retries": 2})
    await run_sync(world, NAME, actor="test")
    bad = his.observation(99999, 40, random.Random(3))  # its Patient never comes
    await sandbox_call(partner, "POST", "/_sandbox/resources", bad)

    held = [await run_sync(world, NAME, actor="test") for _ in range(3)]
    assert [r["Observation.refused"] for r in held] == [1, 1, 1]  # asked again in each of the retries
    assert [r.get("Observation.held_runs") for r in held] == [1, 2, None]
    assert [r.get("Observation.given_up", 0) for r in held] == [0, 0, 1]
    r = await row(world)
    assert r.last_error_code == "hospital_systems.refusals_given_up" and "Observation/his-o99999" in r.last_error
    assert isinstance(json.loads(r.watermark)["Observation"], str)  # the watermark has passed it

    after = his.observation(99998, 1, random.Random(4))
    await sandbox_call(partner, "POST", "/_sandbox/resources", after)
    fourth = await run_sync(world, NAME, actor="test")
    assert fourth["Observation.created"] == 1 and "Observation.refused" not in fourth  # the feed is not blocked
    assert ("Observation", "his-o99999") not in await stored(world)


async def test_no_retries_configured_passes_a_refusal_at_once(world, partner):
    await configure(world, partner, options={"refusal_retries": 0})
    await sandbox_call(partner, "POST", "/_sandbox/resources", his.observation(99999, 40, random.Random(3)))
    first = await run_sync(world, NAME, actor="test")
    assert (first["Observation.refused"], first["Observation.given_up"]) == (1, 1)
    again = await run_sync(world, NAME, actor="test")
    assert "Observation.refused" not in again
