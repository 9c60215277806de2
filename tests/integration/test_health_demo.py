"""The demo hospitals' results arrive through the real FHIR ingest and show every kind of verdict."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import func, select

from health import catalogue_seed, recognition
from health import demo as health_demo
from health.models import StoredResource
from health.results import RESULT_TYPES


async def test_demo_results_show_every_kind_of_verdict(demo):
    await catalogue_seed.load_demo(demo)
    counts = await health_demo.load(demo)
    assert 200 <= counts["health results"] <= 600

    async with demo.db.reader() as s:
        rows = list(
            (await s.execute(select(StoredResource).where(StoredResource.resource_type.in_(RESULT_TYPES)))).scalars()
        )
        verdicts = await recognition.judge_rows(s, rows)
    reasons = Counter(r for v in verdicts for r in v.reasons)
    assert sum(v.recognised for v in verdicts) >= 20
    assert reasons[recognition.Reason.EXPIRED] >= 20
    for reason in (
        recognition.Reason.INSTITUTION_NOT_ELIGIBLE,
        recognition.Reason.NOT_IN_CATALOGUE,
        recognition.Reason.NOT_FINAL,
        recognition.Reason.QC_MISSING,
    ):
        assert reasons[reason] >= 1, reason

    # every result is linked to a demo resident; loading again adds nothing
    assert all(r.person_id for r in rows)
    async with demo.db.reader() as s:
        before = (await s.execute(select(func.count()).select_from(StoredResource))).scalar_one()
    assert await health_demo.load(demo) == {"health results": 0}
    async with demo.db.reader() as s:
        assert (await s.execute(select(func.count()).select_from(StoredResource))).scalar_one() == before
