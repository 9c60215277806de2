"""The operators' pass and trip-count feed against the transport sandbox over real HTTP: every case of
``tests/feed_sync_cases.py``. Only linked cards are stored; an unknown card's updates are counted and dropped."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from connectors.framework.sandbox import started
from connectors.framework.sync import run_sync
from connectors.transport import sandbox as transport_sandbox
from connectors.transport import service as transport
from connectors.transport.models import CommuterPass, TripCount
from federation.audit.models import AuditEntry
from federation.demo import RESIDENTS
from federation.identity import service as identity
from federation.identity.models import Identifier
from tests.feed_sync_cases import *  # noqa: F403 - the shared cases run against this system
from tests.feed_sync_cases import FeedSystem
from tests.housing_support import sandbox_post
from tests.transport_support import configure_operators, link_directly

ZHANG = transport_sandbox.card_of(0, "cq")
WANG = transport_sandbox.card_of(1, "cq")
LI = transport_sandbox.card_of(2, "cq")  # never linked
LINKED = {ZHANG, WANG}


@pytest.fixture
async def world(demo, system):
    await configure_operators(demo, system.url)
    await link_directly(demo, RESIDENTS[0].id_number, "CQTC", ZHANG)
    await link_directly(demo, RESIDENTS[1].id_number, "CQTC", WANG)
    await sandbox_post(system.url, "/_sandbox/cq/passes", {"card_number": WANG, "period": "2026-12", "rides": 2})
    for day in (1, 2):
        await sandbox_post(
            system.url,
            "/_sandbox/cq/rides",
            {"card_number": WANG, "station": "沙坪坝站", "at": f"2026-12-0{day}T07:00"},
        )
    await sandbox_post(
        system.url, "/_sandbox/cq/rides", {"card_number": LI, "station": "杨家坪站", "at": "2026-12-03T07:00"}
    )
    return demo


@pytest.fixture
async def system():
    app = transport_sandbox.create_app()
    async with started(app) as url:

        async def stored(svc):
            async with svc.db.reader() as s:
                cards = {i.id: identity.reveal(svc.cipher, i) for i in (await s.execute(select(Identifier))).scalars()}
                passes = {
                    p.pass_id: (cards[p.identifier_id], p.period, p.status, p.rides_total, p.rides_used)
                    for p in (await s.execute(select(CommuterPass))).scalars()
                }
                counts = {
                    (cards[c.identifier_id], c.month): c.trips for c in (await s.execute(select(TripCount))).scalars()
                }
            return passes, counts

        def truth():
            op = app[transport_sandbox.STATE]["cq"]
            passes = {
                p["pass_id"]: (p["card_number"], p["period"], p["status"], p["rides_total"], p["rides_used"])
                for p in op.passes.values()
                if p["card_number"] in LINKED
            }
            counts = {k: v for k, v in op.counts.items() if k[0] in LINKED}
            return passes, counts

        async def add_changes() -> None:
            await sandbox_post(
                url, "/_sandbox/cq/rides", {"card_number": ZHANG, "station": "两路口站", "at": "2026-12-05T18:00"}
            )

        async def configure(svc, base: str, **config) -> None:
            await configure_operators(svc, base, **config)

        yield FeedSystem(
            connector="transport-cq",
            app=app,
            url=url,
            configure=configure,
            stored=stored,
            truth=truth,
            audit_action="transport.summary_synced",
            apply_path=(transport, "apply_update"),
            add_changes=add_changes,
            clean_applied=55,
        )


async def test_an_unlinked_cards_rides_are_counted_and_nothing_of_them_is_kept(system, world):
    """LI's card is linked to nobody: the sync counts its update and stores nothing of it, and no station of any
    ride (travel data) is stored or audited, only monthly counts."""
    result = await run_sync(world, system.connector, actor="test")
    assert result["unknown_card"] == 1
    passes, counts = await system.stored(world)
    assert {card for card, _ in counts} <= LINKED and LI not in {p[0] for p in passes.values()}
    async with world.db.reader() as s:
        details = [e.details for e in (await s.execute(select(AuditEntry))).scalars()]
    assert not any(station in repr(details) for station in ("杨家坪站", "沙坪坝站"))
