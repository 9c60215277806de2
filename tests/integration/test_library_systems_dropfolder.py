"""The drop folder: complete files (a .done marker, or the same size in two scans) are loaded once through the
catalogue ingest and moved to processed/ or failed/ with their report; the same bytes are never loaded twice."""

from __future__ import annotations

import json
import os
import time

import pymarc
import pytest
from sqlalchemy import func, select

from connectors.framework import service as connectors
from connectors.library_systems import dropfolder, tasks
from connectors.library_systems import sandbox as oai_sandbox
from connectors.library_systems.errors import BadDropFolder
from federation.jobs.service import JobContext
from library.catalog.models import BibRecordRow

NAME = "lib-drop"
LIBRARY = "CDL"


def marcxml(numbers: range) -> bytes:
    body = b"".join(pymarc.record_to_xml(oai_sandbox.marc_record(n), namespace=True) for n in numbers)
    return (
        b'<?xml version="1.0" encoding="UTF-8"?><collection xmlns="http://www.loc.gov/MARC21/slim">'
        + body
        + b"</collection>"
    )


@pytest.fixture
def drop(tmp_path):
    folder = tmp_path / "drop"
    folder.mkdir()
    return folder


@pytest.fixture
async def world(demo, drop):
    async with demo.db.uow() as uow:
        await connectors.configure(
            uow,
            demo,
            NAME,
            kind="library_systems",
            member_code=LIBRARY,
            config={"base_url": "http://127.0.0.1:9", "options": {"harvest": False, "drop_folder": str(drop)}},
            actor="test",
        )
        await uow.commit()
    return demo


async def scan(svc) -> dict[str, int]:
    async with svc.db.reader() as s:
        connector = await connectors.load(s, svc, NAME)
    return await dropfolder.scan(svc, connector, actor="test")


async def records(svc) -> int:
    async with svc.db.reader() as s:
        q = select(func.count()).select_from(BibRecordRow).where(BibRecordRow.library == LIBRARY)
        return (await s.execute(q)).scalar_one()


async def test_a_file_is_loaded_once_its_size_is_stable_across_two_scans(world, drop):
    (drop / "batch1.xml").write_bytes(marcxml(range(20)))
    assert (await scan(world))["processed"] == 0  # first sight: it may still be growing
    assert await records(world) == 0
    assert (await scan(world))["processed"] == 1
    assert await records(world) == 20
    assert not (drop / "batch1.xml").exists()
    report = json.loads((drop / "processed" / "batch1.xml.report.json").read_text())
    assert report["added"] == 20 and report["rejected"] == 0
    assert (drop / "processed" / "batch1.xml").exists()
    assert (await scan(world)) == {"processed": 0, "failed": 0, "duplicates": 0, "waiting": 0}


async def test_a_growing_file_waits_and_a_done_marker_means_at_once(world, drop):
    growing = drop / "growing.xml"
    growing.write_bytes(marcxml(range(5))[:100])
    await scan(world)
    growing.write_bytes(marcxml(range(5)))
    os.utime(growing, (time.time() + 5, time.time() + 5))
    assert (await scan(world))["processed"] == 0  # it changed since the last scan
    (drop / "marked.xml").write_bytes(marcxml(range(5, 10)))
    (drop / "marked.xml.done").touch()
    result = await scan(world)
    assert result["processed"] == 2  # the marked one at once, the growing one now stable
    assert not (drop / "marked.xml.done").exists()
    assert await records(world) == 10


async def test_the_same_bytes_dropped_again_are_not_loaded_twice(world, drop, monkeypatch):
    data = marcxml(range(8))
    (drop / "a.xml").write_bytes(data)
    (drop / "a.xml.done").touch()
    await scan(world)
    loads = 0
    real = dropfolder.ingest_file

    async def counting(*a, **kw):
        nonlocal loads
        loads += 1
        return await real(*a, **kw)

    monkeypatch.setattr(dropfolder, "ingest_file", counting)
    (drop / "a.xml").write_bytes(data)
    (drop / "a.xml.done").touch()
    assert (await scan(world))["duplicates"] == 1 and loads == 0
    names = sorted(p.name for p in (drop / "processed").iterdir())
    assert len([n for n in names if n.startswith("a.xml") and not n.endswith(".report.json")]) == 2
    duplicate = [n for n in names if n.endswith(".report.json") and n != "a.xml.report.json"]
    assert json.loads((drop / "processed" / duplicate[0]).read_text()) == {"duplicate_of": "a.xml"}


async def test_garbage_goes_to_failed_with_its_report_and_the_next_file_still_loads(world, drop):
    (drop / "0-garbage.mrc").write_bytes(b"<html>not marc</html>" * 50)
    (drop / "0-garbage.mrc.done").touch()
    (drop / "1-good.xml").write_bytes(marcxml(range(3)))
    (drop / "1-good.xml.done").touch()
    result = await scan(world)
    assert (result["failed"], result["processed"]) == (1, 1)
    report = json.loads((drop / "failed" / "0-garbage.mrc.report.json").read_text())
    assert report.get("rejected", 0) >= 1 or "error" in report
    assert await records(world) == 3


async def test_a_claim_left_by_a_dead_worker_is_loaded_after_it_goes_stale(world, drop):
    (drop / "processing").mkdir()
    claimed = drop / "processing" / "left.xml"
    claimed.write_bytes(marcxml(range(4)))
    assert (await scan(world))["processed"] == 0  # fresh: perhaps another worker's
    old = time.time() - 7200
    os.utime(claimed, (old, old))
    assert (await scan(world))["processed"] == 1 and await records(world) == 4


async def test_the_periodic_job_scans_every_library_with_a_folder_and_a_missing_folder_is_clear(world, drop):
    (drop / "j.xml").write_bytes(marcxml(range(2)))
    (drop / "j.xml.done").touch()
    result = await tasks.drop_folder_job(world, JobContext(world, "job-1", {}, 1))
    assert result[NAME]["processed"] == 1
    async with world.db.uow() as uow:
        await connectors.configure(
            uow,
            world,
            NAME,
            kind="library_systems",
            member_code=LIBRARY,
            config={"base_url": "http://127.0.0.1:9", "options": {"drop_folder": str(drop / "nope")}},
            actor="test",
        )
        await uow.commit()
    with pytest.raises(BadDropFolder):
        await scan(world)


async def test_the_demo_connector_has_a_drop_folder_and_loads_idempotently(demo):
    from connectors.library_systems import demo as lib_demo

    assert await lib_demo.load(demo) == {"library-system connectors": 1}
    assert await lib_demo.load(demo) == {"library-system connectors": 0}
    async with demo.db.reader() as s:
        loaded = await connectors.load(s, demo, lib_demo.NAME)
    assert loaded.config.base_url == f"http://127.0.0.1:{lib_demo.PORT}/oai"
    assert dropfolder.folder_of(loaded) is not None
