"""``federation.db.insert_many``: rows inserted at the driver's cost read back exactly as SQLAlchemy's own insert.

Run on SQLite and (CI's ``db`` stage) on PostgreSQL, on the catalogue's tables, which hold every kind of column
the bulk loads write: strings, integers, booleans, UTC timestamps, JSON (a dict, and text serialised already),
bytes, and nulls.
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import insert, select

from federation.db import JSONText, insert_many, new_id, utcnow
from library.catalog.models import BibRecordRow, ItemRow, Work

WORKS = Work.__table__
RECORDS = BibRecordRow.__table__
ITEMS = ItemRow.__table__


def works(n: int, now: dt.datetime) -> list[dict]:
    return [
        {
            "id": new_id(),
            "title": f"红楼梦 {i}" if i % 2 else f"Cien años {i}",
            "first_author": None if i % 3 == 0 else "曹雪芹",
            "year": None if i % 4 == 0 else 1700 + i,
            "match_key": f"key{i}",
            "created_at": now,
            "updated_at": now if i % 5 else now + dt.timedelta(seconds=i),
        }
        for i in range(n)
    ]


def records(work_ids: list[str], now: dt.datetime) -> list[dict]:
    out = []
    for i, work_id in enumerate(work_ids):
        data = {"title": f"红楼梦 {i}", "names": [{"name": "曹雪芹", "vernacular": None}], "isbns": ["9787020002207"]}
        out.append(
            {
                "id": new_id(),
                "library": "CQL",
                "control_number": f"cn{i}-{new_id()[:8]}",
                "dialect": "marc21" if i % 2 else "unimarc",
                "version": None if i % 2 else "20240101120000.0",
                "content_hash": "0" * 40,
                "data": JSONText(json.dumps(data, sort_keys=True, ensure_ascii=False)) if i % 2 else data,
                "marc": None if i % 3 == 0 else bytes(range(256)) + "红".encode(),
                "work_id": work_id,
                "pinned": i % 7 == 0,
                "deleted": i % 2 == 0,
                "created_at": now,
                "updated_at": now,
            }
        )
    return out


def row_values(row: object, table) -> dict:  # noqa: ANN001
    return {c.key: getattr(row, c.key) for c in table.c if c.key not in ("id", "work_id", "control_number")}


async def read(svc, model, ids: list[str]) -> list:  # noqa: ANN001
    async with svc.db.reader() as s:
        rows = (await s.execute(select(model).where(model.id.in_(ids)))).scalars().all()
    order = {i: n for n, i in enumerate(ids)}
    return sorted(rows, key=lambda r: order[r.id])


async def test_rows_read_back_as_sqlalchemys_insert_writes_them(svc) -> None:
    now = utcnow()
    ours, theirs = works(40, now), works(40, now)
    our_records = records([w["id"] for w in ours], now)
    their_records = records([w["id"] for w in theirs], now)
    for r, t in zip(our_records, their_records, strict=True):
        t["control_number"] = r["control_number"] + "-sa"
    async with svc.db.uow() as uow:
        await insert_many(uow.session, WORKS, ours)
        await insert_many(uow.session, RECORDS, our_records)
        await uow.session.execute(insert(WORKS), theirs)
        await uow.session.execute(insert(RECORDS), their_records)
        await uow.commit()

    got = await read(svc, Work, [w["id"] for w in ours])
    want = await read(svc, Work, [w["id"] for w in theirs])
    assert [row_values(r, WORKS) for r in got] == [row_values(r, WORKS) for r in want]
    assert got[1].created_at == now and got[0].year is None and got[1].first_author == "曹雪芹"

    got = await read(svc, BibRecordRow, [r["id"] for r in our_records])
    want = await read(svc, BibRecordRow, [r["id"] for r in their_records])
    assert [row_values(r, RECORDS) for r in got] == [row_values(r, RECORDS) for r in want]
    assert [r.work_id for r in got] == [w["id"] for w in ours]
    for i in (0, 1):  # a dict, and text serialised already
        names = [{"name": "曹雪芹", "vernacular": None}]
        assert got[i].data == {"title": f"红楼梦 {i}", "names": names, "isbns": ["9787020002207"]}
    assert got[1].marc == bytes(range(256)) + "红".encode() and got[0].marc is None
    assert got[0].pinned is True and got[0].deleted is True and got[1].deleted is False


async def test_what_it_refuses_it_refuses_before_writing(svc) -> None:
    now = utcnow()
    rows = works(3, now)
    async with svc.db.uow() as uow:
        with pytest.raises(ValueError, match="same columns"):
            await insert_many(uow.session, WORKS, [rows[0], {**rows[1], "extra": 1}])
        with pytest.raises(ValueError, match="no column"):
            await insert_many(uow.session, WORKS, [{**rows[0], "nonsense": 1}])
        with pytest.raises(ValueError, match="created_at"):
            await insert_many(uow.session, WORKS, [{k: v for k, v in rows[0].items() if k != "created_at"}])
        await insert_many(uow.session, WORKS, [])
        await uow.commit()
    assert await read(svc, Work, [r["id"] for r in rows]) == []


async def test_a_constraint_it_breaks_fails_the_statement_and_nothing_of_it_is_kept(svc) -> None:
    now = utcnow()
    rows = works(2, now)
    async with svc.db.uow() as uow:
        await insert_many(uow.session, WORKS, rows)
        await uow.commit()
    items = [
        {
            "id": new_id(),
            "library": "CQL",
            "barcode": barcode,
            "record_id": new_id(),  # no such record
            "work_id": rows[0]["id"],
            "location": None,
            "call_number": None,
            "item_type": "book",
            "status": "available",
            "updated_at": now,
        }
        for barcode in ("b1", "b2")
    ]
    with pytest.raises(Exception, match="(?i)foreign key"):
        async with svc.db.uow() as uow:
            await insert_many(uow.session, ITEMS, items)
            await uow.commit()
    assert await read(svc, ItemRow, [i["id"] for i in items]) == []


async def test_rows_whose_keys_are_not_in_the_tables_order_take_the_drivers_path_too(svc) -> None:
    """The catalogue's loads build their rows' dicts in their own order (the id, timestamps, then the values):
    those go through the compiled plan as well, each value to its own column."""
    from federation.db import _insert_plan

    now = utcnow()
    work_rows = works(3, now)
    shuffled = [dict(reversed(list(r.items()))) for r in records([w["id"] for w in work_rows], now)]
    async with svc.db.uow() as uow:
        connection = await uow.session.connection()
        plan = _insert_plan(connection.dialect, RECORDS, tuple(shuffled[0]))
        assert plan is not None  # both drivers take positional parameters: the compiled plan, not the slow path
        assert list(plan[1]) != list(shuffled[0]) and sorted(plan[1]) == sorted(shuffled[0])
        await insert_many(uow.session, WORKS, work_rows)
        await insert_many(uow.session, RECORDS, shuffled)
        await uow.commit()
    got = await read(svc, BibRecordRow, [r["id"] for r in shuffled])
    for row, want in zip(got, shuffled, strict=True):
        assert row.control_number == want["control_number"] and row.work_id == want["work_id"]
        assert row.dialect == want["dialect"] and row.version == want["version"] and row.marc == want["marc"]
        assert row.pinned is want["pinned"] and row.deleted is want["deleted"] and row.created_at == now
