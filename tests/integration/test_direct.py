"""``federation.direct``: a statement run by the driver itself answers as ``session.execute`` would, in the unit of
work's transaction.

Run on SQLite and, in CI's ``db`` stage, on PostgreSQL: on both the statement goes past SQLAlchemy's execution
layer, and the tests pin what that path relies on (the transaction it joins, the adapters' private parts, errors,
listeners, defaults, bind and result processing).
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import bindparam, event, insert, select, text, update
from sqlalchemy.exc import IntegrityError, InvalidRequestError

from federation import direct
from federation.db import OutboxMessage, new_id, row_tuple, utcnow
from federation.direct import Statement
from library.circulation import cache
from library.circulation.models import FederationPolicy

OUTBOX = OutboxMessage.__table__
_ROW = Statement(
    select(OUTBOX.c.id, OUTBOX.c.topic, OUTBOX.c.payload, OUTBOX.c.created_at, OUTBOX.c.attempts).where(
        OUTBOX.c.id == bindparam("p_id")
    )
)
_BUMP = Statement(
    update(OUTBOX)
    .where(OUTBOX.c.id == bindparam("p_id"), OUTBOX.c.attempts < 5)
    .values(attempts=OUTBOX.c.attempts + 1, last_error=bindparam("p_error"))
)
_ADD = Statement(insert(OUTBOX))


@pytest.fixture(autouse=True, params=["driver", "sqlalchemy"])
def way(request, monkeypatch) -> str:  # noqa: ANN001
    """Every test runs both ways: by the driver, and through SQLAlchemy as for a driver the module does not know
    (the answers must be the same)."""
    if request.param == "sqlalchemy":
        monkeypatch.setattr(direct, "_link_of", lambda sync: direct._Link(sync, None))
    return request.param


async def stored(svc, row_id: str):  # noqa: ANN001, ANN201
    async with svc.db.reader() as s:
        return (await s.execute(select(OUTBOX).where(OUTBOX.c.id == row_id))).first()


async def test_rows_read_back_as_sqlalchemy_reads_them(svc):
    row_id, at = new_id(), dt.datetime(2026, 5, 1, 8, 30, tzinfo=dt.timezone(dt.timedelta(hours=8)))
    async with svc.db.uow() as uow:
        added = await _ADD.run(
            uow.session, {"id": row_id, "topic": "t.one", "payload": {"书": "红楼梦", "n": [1, 2]}, "created_at": at}
        )
        assert added.rowcount == 1 and added.rows == []
        await uow.commit()
    async with svc.db.uow() as uow:
        mine = (await _ROW.run(uow.session, {"p_id": row_id})).one()
        theirs = (await uow.session.execute(_ROW.statement, {"p_id": row_id})).one()
    assert tuple(mine) == tuple(theirs)
    assert mine[2] == {"书": "红楼梦", "n": [1, 2]}
    assert mine[3] == at and mine[3].tzinfo == dt.UTC  # UTCDateTime's result processing ran
    assert mine[4] == 0  # the column's Python-side default (attempts=0) was filled in


async def test_python_side_insert_defaults_are_computed_per_row(svc):
    before = utcnow()
    ids = [new_id(), new_id()]
    async with svc.db.uow() as uow:
        for i in ids:
            await _ADD.run(uow.session, {"id": i, "topic": "t.default", "payload": {}})
        await uow.commit()
    rows = [await stored(svc, i) for i in ids]
    assert all(r.created_at >= before and r.attempts == 0 for r in rows)


async def test_rowcount_counts_the_rows_an_update_changed(svc):
    row_id = new_id()
    async with svc.db.uow() as uow:
        await _ADD.run(uow.session, {"id": row_id, "topic": "t.count", "payload": {}, "attempts": 4})
        assert (await _BUMP.run(uow.session, {"p_id": row_id, "p_error": "once"})).rowcount == 1
        assert (await _BUMP.run(uow.session, {"p_id": row_id, "p_error": "twice"})).rowcount == 0  # attempts < 5
        assert (await _BUMP.run(uow.session, {"p_id": "nobody", "p_error": "x"})).rowcount == 0
        await uow.commit()
    assert (await stored(svc, row_id)).last_error == "once"


async def test_a_first_statement_joins_the_transaction_and_rolls_back_with_it(svc):
    row_id = new_id()
    async with svc.db.uow() as uow:
        await _ADD.run(uow.session, {"id": row_id, "topic": "t.kept", "payload": {}})
        await uow.commit()
    async with svc.db.uow() as uow:  # the direct UPDATE is the transaction's first statement: BEGIN must precede it
        assert (await _BUMP.run(uow.session, {"p_id": row_id, "p_error": "undone"})).rowcount == 1
        await uow.session.execute(update(OUTBOX).where(OUTBOX.c.id == row_id).values(topic="t.undone"))
        # leaving without commit rolls back both
    row = await stored(svc, row_id)
    assert (row.attempts, row.last_error, row.topic) == (0, None, "t.kept")


async def test_what_the_session_has_pending_is_flushed_first(svc):
    row_id = new_id()
    async with svc.db.uow() as uow:
        uow.session.add(OutboxMessage(id=row_id, topic="t.pending", payload={"x": 1}))
        assert (await _ROW.run(uow.session, {"p_id": row_id})).one()[1] == "t.pending"
        await uow.commit()


async def test_a_constraint_violation_is_sqlalchemys_integrity_error_and_the_connection_lives_on(svc):
    row_id = new_id()
    async with svc.db.uow() as uow:
        await _ADD.run(uow.session, {"id": row_id, "topic": "t.first", "payload": {}})
        await uow.commit()
    with pytest.raises(IntegrityError):
        async with svc.db.uow() as uow:
            await _ADD.run(uow.session, {"id": row_id, "topic": "t.second", "payload": {}})
    for _ in range(3):  # the pooled connections were rolled back, not left in a failed transaction
        async with svc.db.uow() as uow:
            assert (await _ROW.run(uow.session, {"p_id": row_id})).one()[1] == "t.first"
            await uow.commit()


async def test_a_missing_parameter_is_refused_before_anything_is_sent(svc):
    async with svc.db.uow() as uow:
        with pytest.raises(InvalidRequestError, match="p_error"):
            await _BUMP.run(uow.session, {"p_id": "x"})


async def test_in_lists_given_at_execution_are_refused_on_every_engine(svc):
    q = Statement(select(OUTBOX.c.id).where(OUTBOX.c.id.in_(bindparam("p_ids", expanding=True))))
    async with svc.db.uow() as uow:
        with pytest.raises(ValueError, match="expanding"):
            await q.run(uow.session, {"p_ids": ["a", "b"]})


async def test_in_lists_fixed_in_the_statement_are_expanded_once(svc):
    ids = [new_id() for _ in range(4)]
    q = Statement(
        select(OUTBOX.c.id)
        .where(OUTBOX.c.topic.in_(("t.a", "t.b")), OUTBOX.c.attempts == bindparam("p_attempts"))
        .where(OUTBOX.c.id.in_(ids))
        .order_by(OUTBOX.c.id)
    )
    async with svc.db.uow() as uow:
        for i, topic in zip(ids, ("t.a", "t.b", "t.c", "t.a"), strict=True):
            await _ADD.run(uow.session, {"id": i, "topic": topic, "payload": {}, "attempts": 1 if i != ids[3] else 2})
        for _ in range(2):  # the plan made at the first run serves the second
            assert [r[0] for r in (await q.run(uow.session, {"p_attempts": 1})).rows] == sorted(ids[:2])
        await uow.commit()


async def test_cursor_listeners_see_the_statement_and_the_circulation_cache_notices_writes(svc, way):
    seen: list[str] = []
    executed: list[object] = []

    def on_cursor(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        seen.append(statement)

    def on_execute(conn, clause, multiparams, params, execution_options) -> None:  # noqa: ANN001
        executed.append(clause)

    event.listen(svc.db.engine.sync_engine, "before_cursor_execute", on_cursor)
    event.listen(svc.db.engine.sync_engine, "before_execute", on_execute)
    table = FederationPolicy.__table__
    write = Statement(update(table).where(table.c.id == "federation").values(max_total_loans=bindparam("p_max")))
    try:
        async with svc.db.uow() as uow:
            await cache.snapshot(uow.session)  # the cache watches every engine from its first use
            generation = cache.generation()
            await write.run(uow.session, {"p_max": 9})
            assert cache.generation() > generation  # a write to a cached table drops this process's copies
            await uow.commit()
    finally:
        event.remove(svc.db.engine.sync_engine, "before_cursor_execute", on_cursor)
        event.remove(svc.db.engine.sync_engine, "before_execute", on_execute)
    assert any(s.lstrip().upper().startswith("UPDATE CIRC_FEDERATION_POLICY") for s in seen)
    # by the driver, SQLAlchemy's execution layer never saw the statement
    assert (write.statement in executed) is (way == "sqlalchemy")


async def test_many_rows_in_one_call_each_with_its_defaults(svc):
    ids = [new_id() for _ in range(3)]
    rows = [{"id": i, "topic": f"t.many.{n}", "payload": {"n": n}} for n, i in enumerate(ids)]
    async with svc.db.uow() as uow:
        await _ADD.run_many(uow.session, rows)
        for other in ({"id": new_id()}, {"id": new_id(), "topic": "t", "attempts": 1}):  # fewer, or others
            with pytest.raises(ValueError, match="same parameters"):
                await _ADD.run_many(uow.session, [{"id": new_id(), "topic": "t", "payload": {}}, other])
        await uow.commit()
    stored_rows = [await stored(svc, i) for i in ids]
    assert [(r.topic, r.payload, r.attempts) for r in stored_rows] == [(f"t.many.{n}", {"n": n}, 0) for n in range(3)]
    with pytest.raises(IntegrityError):
        async with svc.db.uow() as uow:
            await _ADD.run_many(uow.session, [{"id": new_id(), "topic": "t", "payload": {}}, rows[0]])
    assert await stored(svc, ids[0]) is not None


async def test_a_text_statement_returns_its_rows_though_its_columns_are_known_only_when_it_runs(svc):
    count = Statement(text("SELECT count(*) FROM outbox WHERE topic = :t"))
    async with svc.db.uow() as uow:
        assert (await count.run(uow.session, {"t": "t.text"})).scalar() == 0
        await _ADD.run(uow.session, {"id": new_id(), "topic": "t.text", "payload": {}})
        assert (await count.run(uow.session, {"t": "t.text"})).scalar() == 1
        await uow.commit()


async def test_read_once_runs_a_statement_by_itself_with_named_rows(svc):
    row_id = new_id()
    named = Statement(
        select(OUTBOX.c.id, OUTBOX.c.topic, OUTBOX.c.created_at).where(OUTBOX.c.id == bindparam("p_id")),
        row=row_tuple("OutboxRow", [OUTBOX.c.id, OUTBOX.c.topic, OUTBOX.c.created_at]),
    )
    async with svc.db.uow() as uow:
        await _ADD.run(uow.session, {"id": row_id, "topic": "t.once", "payload": {}})
        await uow.commit()
    for _ in range(3):  # autocommit: nothing is left open on the pooled connection between reads
        (row,) = await svc.db.read_once(named, {"p_id": row_id})
        assert (row.id, row.topic) == (row_id, "t.once") and row.created_at.tzinfo == dt.UTC
    async with svc.db.reader(snapshot=False) as s:  # a session without a transaction, statement by statement
        assert (await named.run(s, {"p_id": row_id})).one().topic == "t.once"
    assert await svc.db.read_once(named, {"p_id": "nobody"}) == []


async def test_a_select_of_orm_attributes_answers_alike(svc):
    row_id = new_id()
    q = Statement(select(OutboxMessage.id, OutboxMessage.payload).where(OutboxMessage.id == bindparam("p_id")))
    async with svc.db.uow() as uow:
        await _ADD.run(uow.session, {"id": row_id, "topic": "t.orm", "payload": {"k": "v"}})
        answer = await q.run(uow.session, {"p_id": row_id})
        await uow.commit()
    assert [tuple(r) for r in answer.rows] == [(row_id, {"k": "v"})] and answer.rowcount in (1, -1)
