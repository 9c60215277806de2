"""``Database.read_once``: one statement outside any transaction, for the reads every request makes.

It must send nothing but its statement, see what is committed, never see what is not, and leave the pooled
connection as it found it: the next read session on it begins its transaction as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from sqlalchemy import bindparam, event, select

from federation.accounts.models import Account
from federation.accounts.service import create_staff
from federation.db import row_tuple
from federation.direct import Statement

QUERY = select(Account.id, Account.active).where(Account.username == bindparam("name"))
# the same read through SQLAlchemy and, as the requests' own reads run, by the driver itself (PostgreSQL)
BY_NAME_WAYS = [QUERY, Statement(QUERY, row=row_tuple("ByName", QUERY.selected_columns))]


@contextlib.contextmanager
def statements(svc) -> Iterator[list[str]]:
    seen: list[str] = []

    def on_execute(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        seen.append(statement.split(None, 1)[0].upper())

    engine = svc.db.read_engine.sync_engine
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)


@pytest.mark.parametrize("BY_NAME", BY_NAME_WAYS, ids=["sqlalchemy", "direct"])
async def test_read_once_sends_its_statement_alone_and_sees_what_is_committed(svc, BY_NAME):  # noqa: N803
    async with svc.db.uow() as uow:
        account = await create_staff(uow, "reader-test@CQL", "a-long-password", "CQL", ["librarian"])
        await uow.commit()
    with statements(svc) as seen:
        rows = await svc.db.read_once(BY_NAME, {"name": account.username})
    assert [tuple(r) for r in rows] == [(account.id, True)]
    assert seen == ["SELECT"]  # no BEGIN before it (SQLite's would show here), nothing after it

    assert await svc.db.read_once(BY_NAME, {"name": "nobody"}) == []


@pytest.mark.parametrize("BY_NAME", BY_NAME_WAYS, ids=["sqlalchemy", "direct"])
async def test_read_once_does_not_see_an_open_transaction_and_leaves_the_pool_as_it_was(svc, BY_NAME):  # noqa: N803
    async with svc.db.uow() as uow:
        account = await create_staff(uow, "pending@CQL", "a-long-password", "CQL", ["librarian"])
        await uow.session.flush()
        name = {"name": account.username}
        # the writer holds its transaction open: a read outside it does not wait for it and sees nothing of it
        assert await svc.db.read_once(BY_NAME, name) == []
    assert await svc.db.read_once(BY_NAME, name) == []  # rolled back

    for _ in range(3):  # every pooled read connection has served read_once by now
        await svc.db.read_once(BY_NAME, name)
    with statements(svc) as seen:
        async with svc.db.reader() as s:
            await s.execute(select(Account.id).limit(1))
            await s.execute(select(Account.id).limit(1))
    expected = ["BEGIN", "SELECT", "SELECT"] if svc.db.is_sqlite else ["SELECT", "SELECT"]
    assert seen == expected  # a read session still runs in one transaction
