"""The public-rental applications' feed against the fund centres' sandbox over real HTTP: every case of
``tests/feed_sync_cases.py`` (happy path, retries, the circuit, duplicates and reordering, a hole, garbage, a slow
partner, a run killed mid-way)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from connectors.framework.sandbox import started
from connectors.framework.sync import run_sync
from connectors.housing import sandbox as housing_sandbox
from connectors.housing import service as housing
from connectors.housing.models import RentalApplication
from federation.audit.models import AuditEntry
from federation.demo import RESIDENTS
from federation.identity.idnumber import check_digit
from tests.feed_sync_cases import *  # noqa: F403 - the shared cases run against this system
from tests.feed_sync_cases import FeedSystem
from tests.housing_support import configure_centres, sandbox_post

UNKNOWN = "51010419900101999" + check_digit("51010419900101999")  # nobody in the federation
SCRIPT = [
    {"application_no": "CD-GZF-2026-0005", "status": "approved"},
    {"application_no": "CD-GZF-2025-0007", "status": "allocated"},
    {
        "application_no": "CD-GZF-2026-0008",
        "status": "submitted",
        "id_number": RESIDENTS[7].id_number,
        "estate": "郫都区公租房",
    },
    {"application_no": "CD-GZF-2026-0099", "status": "submitted", "id_number": UNKNOWN, "estate": "温江区公租房"},
    {"application_no": "CD-GZF-2026-0005", "status": "waiting_allocation", "queue_position": 5},
]
KNOWN = {r.id_number for r in RESIDENTS}


@pytest.fixture
async def world(demo, system):
    await configure_centres(demo, system.url)
    for change in SCRIPT:
        await sandbox_post(system.url, "/_sandbox/cd/rental-changes", change)
    return demo


@pytest.fixture
async def system():
    app = housing_sandbox.create_app()
    async with started(app) as url:

        async def configure(svc, base: str, **config) -> None:
            await configure_centres(svc, base, **config)

        async def stored(svc) -> dict[str, tuple[str, int | None]]:
            async with svc.db.reader() as s:
                q = select(RentalApplication).where(RentalApplication.connector == "housing-cd")
                return {a.application_no: (a.status, a.queue_position) for a in (await s.execute(q)).scalars()}

        def truth() -> dict[str, tuple[str, int | None]]:
            apps = app[housing_sandbox.STATE].centres["cd"].applications.values()
            return {a["application_no"]: (a["status"], a["queue_position"]) for a in apps if a["id_number"] in KNOWN}

        async def add_changes() -> None:
            await sandbox_post(
                url, "/_sandbox/cd/rental-changes", {"application_no": "CD-GZF-2026-0008", "status": "approved"}
            )
            await sandbox_post(
                url, "/_sandbox/cd/rental-changes", {"application_no": "CD-GZF-2025-0007", "status": "withdrawn"}
            )

        yield FeedSystem(
            connector="housing-cd",
            app=app,
            url=url,
            configure=configure,
            stored=stored,
            truth=truth,
            audit_action="housing.rental_application_synced",
            apply_path=(housing, "apply_rental_change"),
            add_changes=add_changes,
            clean_applied=6,
        )


async def test_an_application_of_someone_outside_the_federation_is_counted_and_not_kept(system, world):
    """CD-GZF-2026-0099 names an ID number no person of the federation holds: counted, not stored, and the number
    appears nowhere in the audit trail."""
    result = await run_sync(world, system.connector, actor="test")
    assert result["unknown_person"] == 1
    assert "CD-GZF-2026-0099" not in await system.stored(world)
    async with world.db.reader() as s:
        details = [e.details for e in (await s.execute(select(AuditEntry))).scalars()]
    assert UNKNOWN not in repr(details)
