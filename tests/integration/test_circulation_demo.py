"""The demo circulation: loaded after the core's world and the catalogue's, through the service; reloads add nothing."""

from __future__ import annotations

from sqlalchemy import func, select

from federation import demo as demo_world
from federation.db import utcnow
from library.catalog import demo as catalog_demo
from library.catalog.models import ItemRow
from library.circulation import demo, reports
from library.circulation.models import Borrower, ItemState, Loan, Reader, Transit


async def catalogue(svc):
    return await catalog_demo.load(svc, per_library=16)


async def test_demo_circulation_figures_and_reload(svc):
    counts = await demo_world.load(svc, [catalogue, demo.load])
    assert (counts["loans"], counts["transits"]) == (6, 1)

    async with svc.db.reader() as s:
        loans = list((await s.execute(select(Loan))).scalars())
        assert len(loans) == 6
        assert sum(loan.state == "active" for loan in loans) == 5
        assert [loan.barcode for loan in loans if loan.renewals] == ["CQL9000010"]
        now = utcnow()
        assert [loan.barcode for loan in loans if loan.state == "active" and loan.due_at < now] == ["CDL9000060"]

        pairs = await reports.loans_by_library(s, reports.Period())
        assert [(p.library, p.home_library, p.loans, p.active) for p in pairs] == [
            ("CDL", "CQL", 1, 1),
            ("CQL", "CQL", 1, 1),
            ("CQL", "SCL", 2, 1),
            ("SCL", "CDL", 1, 1),
            ("SCL", "CQL", 1, 1),
        ]
        months, flows = await reports.cross_city(s, reports.Period())
        assert [(m.loans, m.cross_city) for m in months] == [(6, 4)]
        assert sorted((f.lending_city, f.home_city, f.loans) for f in flows) == [
            ("成都", "重庆", 2),
            ("重庆", "成都", 2),
        ]

        [transit] = list((await s.execute(select(Transit))).scalars())
        assert (transit.barcode, transit.from_service_point, transit.to_service_point, transit.state) == (
            "CQL9000090",
            "SCL-B1",
            "CQL-MAIN",
            "in_transit",
        )
        # the invariants the service keeps: counters, the copy's state and the catalogue's status agree
        readers = sum((await s.execute(select(Reader.active_loans))).scalars())
        borrowers = sum((await s.execute(select(Borrower.active_loans))).scalars())
        assert readers == borrowers == 5
        status = dict((await s.execute(select(ItemState.barcode, ItemState.status))).all())
        assert status["CQL9000090"] == "in_transit" and status["CDL9000060"] == "on_loan"
        catalog = dict((await s.execute(select(ItemRow.barcode, ItemRow.status))).all())
        assert catalog["CQL9000090"] == "in_transit" and catalog["SCL9000020"] == "on_loan"

    again = await demo_world.load(svc, [catalogue, demo.load])
    assert (again["loans"], again["transits"], again["catalogue records"]) == (0, 0, 0)
    async with svc.db.reader() as s:
        assert (await s.execute(select(func.count()).select_from(Loan))).scalar_one() == 6
        assert (await s.execute(select(func.count()).select_from(Transit))).scalar_one() == 1


async def test_demo_loaders_run_after_the_catalogue():
    from federation.extensions import Registry

    registry = Registry()
    import library

    library.register(registry)
    names = [f"{loader.__module__}.{loader.__name__}" for loader in registry.demo_loaders]
    assert names.index("library.catalog.demo.load") < names.index("library.circulation.demo.load")
