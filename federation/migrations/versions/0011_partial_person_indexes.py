"""persons.phone_index and persons.merged_into_id indexed only where set

Both are NULL for nearly every person. SQLite's statistics then count one value shared by every row and its planner
scanned the persons table (5.8 ms on 50,000 persons) for the "who was merged into this patient" question asked on
every read of a patient's results; partial indexes hold only the rows that are set, so they are always chosen.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("phone_index", "merged_into_id")


def _where(column: str) -> dict[str, sa.TextClause]:
    return {f"{dialect}_where": sa.text(f"{column} IS NOT NULL") for dialect in ("sqlite", "postgresql")}


def upgrade() -> None:
    for column in COLUMNS:
        op.drop_index(f"ix_persons_{column}", table_name="persons")
        op.create_index(f"ix_persons_{column}", "persons", [column], unique=False, **_where(column))


def downgrade() -> None:
    for column in COLUMNS:
        op.drop_index(f"ix_persons_{column}", table_name="persons")
        op.create_index(f"ix_persons_{column}", "persons", [column], unique=False)
