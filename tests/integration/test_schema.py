"""The schema the migrations build is the one the models declare, and the indexes the hot reads rely on are there.

The tests' databases are built by the migrations (``conftest``) while the code reads through the models: a column,
type or index added to one and not the other would pass every other test on one engine and fail in production.
"""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select, text

from federation.models import Base
from health.fhir import search


async def test_the_migrated_schema_is_the_models_schema(svc):
    async with svc.db.engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata)
        )
    assert diff == []


async def test_counting_a_patients_results_for_a_search_total_reads_the_index_alone(svc):
    """``Bundle.total`` counts the patient's resources that are not withdrawn: the person index carries
    ``withdrawn`` as its last column, so the count never visits the table's rows."""
    sp = search.parse_search("Observation", {"patient": ["p1"]})
    where, values = search.filters(sp, ["p1"])
    count = select(func.count()).select_from(search.R).where(*where).params(values)
    sql = count.compile(svc.db.engine.sync_engine, compile_kwargs={"literal_binds": True})
    async with svc.db.engine.connect() as conn:
        if svc.db.is_sqlite:
            plan = " / ".join(str(r[-1]) for r in await conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
            assert "USING COVERING INDEX ix_fhir_resources_person_type_effective" in plan, plan
            return
        # the tests' tables are nearly empty and the planner's choice arbitrary: leave it nothing but index-only
        # scans, which only an index holding person_id, resource_type and withdrawn can do for this count
        for kind in ("seqscan", "bitmapscan", "indexscan"):
            await conn.execute(text(f"SET LOCAL enable_{kind} = off"))
        plan = "\n".join(r[0] for r in await conn.execute(text(f"EXPLAIN {sql}")))
    assert "Index Only Scan using ix_fhir_resources_person_type_effective" in plan, plan
