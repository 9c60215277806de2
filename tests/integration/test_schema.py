"""The schema the migrations build is the one the models declare, and the indexes the hot reads rely on are there.

The tests' databases are built by the migrations (``conftest``) while the code reads through the models: a column,
type or index added to one and not the other would pass every other test on one engine and fail in production.
"""

from __future__ import annotations

import pytest
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


async def test_counting_a_patients_results_for_a_search_total_never_reads_the_table(svc):
    """``Bundle.total`` counts the patient's resources that are not withdrawn: on PostgreSQL the person index
    carries ``withdrawn`` (INCLUDE), so the count is an index-only scan instead of a visit to every row's page."""
    if svc.db.is_sqlite:
        pytest.skip("SQLite has no INCLUDE; its count reads the table's rows")
    sp = search.parse_search("Observation", {"patient": ["p1"]})
    where, values = search.filters(sp, ["p1"])
    count = select(func.count()).select_from(search.R).where(*where).params(values)
    sql = count.compile(svc.db.engine.sync_engine, compile_kwargs={"literal_binds": True})
    async with svc.db.engine.connect() as conn:
        # the tests' tables are small: without this the planner scans them whatever the indexes
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        await conn.execute(text("SET LOCAL enable_bitmapscan = off"))
        plan = "\n".join(r[0] for r in await conn.execute(text(f"EXPLAIN {sql}")))
    assert "Index Only Scan using ix_fhir_resources_person_type_effective" in plan, plan
