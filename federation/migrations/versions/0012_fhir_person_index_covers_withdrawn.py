"""fhir_resources' person index carries `withdrawn` (PostgreSQL)

Every read of a patient's results filters out withdrawn resources, and a FHIR search counts the rows it matches
for `Bundle.total`. With `withdrawn` only in the table, PostgreSQL visited every matching row's heap page to count
them (200 pages, 1.3 ms for a patient with 1,000 results); carried in the index (INCLUDE, not a key column, so the
index's order and every query it serves stay as they were), the count is an index-only scan (15 pages, 0.6 ms).
SQLite has no INCLUDE and is unchanged.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_fhir_resources_person_type_effective"
COLUMNS = ["person_id", "resource_type", "effective_at"]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index(INDEX, table_name="fhir_resources")
    op.create_index(INDEX, "fhir_resources", COLUMNS, unique=False, postgresql_include=["withdrawn"])


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index(INDEX, table_name="fhir_resources")
    op.create_index(INDEX, "fhir_resources", COLUMNS, unique=False)
