"""the audit trail in several hash chains

One chain serialised every write that audited on PostgreSQL: an append held the chain's lock until its
transaction committed, so twenty concurrent checkouts queued on it, and a second server process added nothing.
Entries now carry their chain and their place in it (``chain``, ``link``); ``seq`` still orders the whole trail
and is given by the database. The entries written before are chain 0, each at its ``seq``: their seals, which
name that place as "seq", verify unchanged.

Downgrading is sound only while chain 0 is the only chain (the single chain's code reads nothing else).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "audit_entries"
UNIQUE = "uq_audit_entries_chain_link"
SEQUENCE = "audit_entries_seq_seq"
SQLITE_TRIGGERS = {
    "audit_entries_no_update": "CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries "
    "BEGIN SELECT RAISE(ABORT, 'audit_entries is append-only'); END",
    "audit_entries_no_delete": "CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries "
    "BEGIN SELECT RAISE(ABORT, 'audit_entries is append-only'); END",
}


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _writable(on: bool) -> None:
    """The append-only triggers out of the way (``on``) or back: this migration fills the new column of the
    entries already written, the only update the trail ever takes."""
    if _postgres():
        op.execute(f"ALTER TABLE {TABLE} {'DISABLE' if on else 'ENABLE'} TRIGGER audit_entries_append_only")
        return
    for name, ddl in SQLITE_TRIGGERS.items():
        op.execute(f"DROP TRIGGER {name}" if on else ddl)


def upgrade() -> None:
    _writable(True)
    op.add_column(TABLE, sa.Column("chain", sa.SmallInteger(), server_default="0", nullable=False))
    op.add_column(TABLE, sa.Column("link", sa.BigInteger(), nullable=True))
    op.execute("UPDATE audit_entries SET link = seq")
    with op.batch_alter_table(TABLE) as batch:  # SQLite rebuilds the table here, which drops its triggers
        batch.alter_column("link", existing_type=sa.BigInteger(), nullable=False)
        batch.create_unique_constraint(UNIQUE, ["chain", "link"])
    _writable(False)
    if _postgres():  # SQLite gives an INTEGER PRIMARY KEY the next number by itself
        op.execute(f"CREATE SEQUENCE {SEQUENCE} OWNED BY {TABLE}.seq")
        op.execute(
            "SELECT setval('audit_entries_seq_seq', COALESCE((SELECT max(seq) FROM audit_entries), 0) + 1, false)"
        )
        op.execute(f"ALTER TABLE {TABLE} ALTER COLUMN seq SET DEFAULT nextval('{SEQUENCE}')")


def downgrade() -> None:
    if _postgres():
        op.execute(f"ALTER TABLE {TABLE} ALTER COLUMN seq DROP DEFAULT")
        op.execute(f"DROP SEQUENCE {SEQUENCE}")
    _writable(True)
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(UNIQUE, type_="unique")
        batch.drop_column("link")
        batch.drop_column("chain")
    _writable(False)
