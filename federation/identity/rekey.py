"""Changing the data key: every encrypted value rewritten under the current key, so a retired key can go.

Each package that stores values with ``svc.cipher`` declares the column (:func:`declare`, from its services
hook): the table's key, the encrypted column and how a row's associated data (its "context") is made. ``reencrypt``
walks each column in key order, in batches, one transaction per batch. A value already under the current key is
left alone, so a run can be stopped and started again, and a second run changes nothing. Each value is replaced
only if it is still the one read (a conditional UPDATE), so a value written meanwhile by the service is never
overwritten with an older one. A value that no given key opens is counted and named by its row's key, never
guessed at; the rest go on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from sqlalchemy import Column, Table, bindparam, select, update

from federation.audit.service import Record
from federation.identity.crypto import UnknownDataKey
from federation.services import Services

BATCH = 500
MAX_NAMED = 20  # unreadable rows named in a report, per column


@dataclasses.dataclass(frozen=True)
class EncryptedColumn:
    """A column of values encrypted with ``svc.cipher``: ``context`` makes a row's associated data from the values
    of ``context_columns``, as the owning code does when it encrypts."""

    column: Column[Any]
    context_columns: tuple[Column[Any], ...]
    context: Callable[..., str]

    @property
    def table(self) -> Table:
        return self.column.table  # type: ignore[return-value]

    @property
    def key(self) -> Column[Any]:
        (key,) = self.table.primary_key.columns
        return key

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.column.name}"


_DECLARED = "identity.encrypted_columns"


def declare(svc: Services, column: Any, context_columns: Sequence[Any], context: Callable[..., str]) -> None:
    """Declare an encrypted column (an ORM attribute or a table column) of this process's schema."""
    declared: dict[str, EncryptedColumn] = svc.extras.setdefault(_DECLARED, {})
    entry = EncryptedColumn(column.expression, tuple(c.expression for c in context_columns), context)
    declared[entry.name] = entry


def declared(svc: Services) -> list[EncryptedColumn]:
    return list(svc.extras.get(_DECLARED, {}).values())


@dataclasses.dataclass
class ColumnReport:
    name: str
    rewritten: int = 0
    current: int = 0
    unreadable: int = 0
    unreadable_keys: list[str] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


async def reencrypt(
    svc: Services, *, check: bool = False, batch: int = BATCH, actor: str = "system:cli"
) -> list[ColumnReport]:
    """Rewrite every declared column's values that are not under the current data key (``check``: only count
    them); one report per column. Audited as ``secrets.reencrypt``, with the counts."""
    reports = [await _column(svc, c, check, batch) for c in sorted(declared(svc), key=lambda c: c.name)]
    if not check:
        async with svc.db.uow() as uow:
            details = {r.name: {k: v for k, v in r.as_dict().items() if k != "name"} for r in reports}
            await svc.audit(uow, Record(action="secrets.reencrypt", actor=actor, details=details))
            await uow.commit()
    return reports


async def _column(svc: Services, c: EncryptedColumn, check: bool, batch: int) -> ColumnReport:
    report = ColumnReport(c.name)
    table, key, column = c.table, c.key, c.column
    read = select(key, column, *c.context_columns).where(column.is_not(None)).order_by(key).limit(batch)
    # the row's other columns as they are: an ``onupdate`` (updated_at) would make a key change look like an edit
    untouched = {col.name: col for col in table.columns if col.onupdate is not None}
    write = (
        update(table)
        .where(key == bindparam("rekey_row"), column == bindparam("rekey_old"))
        .values({column.name: bindparam("rekey_new"), **untouched})
    )
    after: Any = None
    while True:
        async with svc.db.reader() if check else svc.db.uow() as handle:
            session = handle if check else handle.session
            q = read if after is None else read.where(key > after)
            rows = (await session.execute(q)).all()
            if not rows:
                return report
            after = rows[-1][0]
            changes = []
            for row in rows:
                k, blob, *context_values = row
                if svc.cipher.is_current(blob):
                    report.current += 1
                    continue
                context = c.context(*context_values)
                try:
                    plain = svc.cipher.decrypt(blob, context)
                except (UnknownDataKey, InvalidTag, ValueError):
                    report.unreadable += 1
                    if len(report.unreadable_keys) < MAX_NAMED:
                        report.unreadable_keys.append(str(k))
                    continue
                new = svc.cipher.encrypt(plain, context)
                changes.append({"rekey_row": k, "rekey_old": blob, "rekey_new": new})
            if changes and not check:
                conn = await session.connection()
                for change in changes:  # one by one: each its rowcount (a value changed meanwhile is left)
                    result = await conn.execute(write, change)
                    report.rewritten += result.rowcount
                await handle.commit()
            elif changes:
                report.rewritten += len(changes)
