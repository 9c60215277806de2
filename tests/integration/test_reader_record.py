"""A person's reader record at a library: made on first use, once, however many desks use it at the same moment.

Run on SQLite and (with TWINCITY_TEST_DATABASE_URL) on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from sqlalchemy import select, update

from federation.identity import service as identity
from federation.identity.models import IdentifierType, Person
from library.circulation import service
from library.circulation.models import Borrower, Reader


async def _person(svc) -> Person:  # noqa: ANN001
    """A newcomer: no reader record anywhere yet."""
    async with svc.db.uow() as uow:
        registered = await identity.register(
            uow,
            svc,
            identity.RegisterPerson(
                name="新读者",
                home_institution="CQL",
                identifiers=[identity.IdentifierInput(IdentifierType.SOCIAL_SECURITY_CARD, "RR0000001")],
            ),
            actor="test",
        )
        await uow.commit()
    return registered.person


async def _records(svc, person_id: str) -> list[Reader]:  # noqa: ANN001
    async with svc.db.reader() as s:
        return list((await s.execute(select(Reader).where(Reader.person_id == person_id))).scalars())


async def test_first_use_makes_the_record_and_later_uses_read_it(demo):
    person = await _person(demo)
    async with demo.db.uow() as uow:
        made = await service.reader(uow.session, person, "SCL", today=dt.date(2026, 12, 7))
        await uow.commit()
    assert (made.library, made.person_id, made.active_loans, made.blocked) == ("SCL", person.id, 0, False)
    assert made.category == "adult"
    async with demo.db.uow() as uow:  # a block and a loan count set since: the record is read as stored
        await uow.session.execute(
            update(Reader).where(Reader.id == made.id).values(blocked=True, block_reason="丢失图书", active_loans=3)
        )
        await uow.commit()
    async with demo.db.uow() as uow:
        again = await service.reader(uow.session, person, "SCL")
        await uow.commit()
    assert (again.id, again.blocked, again.block_reason, again.active_loans) == (made.id, True, "丢失图书", 3)
    assert [r.id for r in await _records(demo, person.id) if r.library == "SCL"] == [made.id]


async def test_two_desks_at_once_make_one_record(demo):
    person = await _person(demo)

    async def desk() -> str:
        async with demo.db.uow() as uow:
            rdr = await service.reader(uow.session, person, "CDL")
            await asyncio.sleep(0.05)  # both transactions open at once, where the engine allows
            await uow.commit()
            return rdr.id

    ids = await asyncio.gather(*(desk() for _ in range(4)))
    records = [r for r in await _records(demo, person.id) if r.library == "CDL"]
    assert len(records) == 1 and set(ids) == {records[0].id}


async def test_the_federation_wide_counter_row_is_made_once(demo):
    person = await _person(demo)
    for _ in range(2):
        async with demo.db.uow() as uow:
            await service._make_borrower(uow.session, person.id)
            await uow.commit()
    async with demo.db.reader() as s:
        rows = list((await s.execute(select(Borrower).where(Borrower.person_id == person.id))).scalars())
    assert [(r.active_loans, r.blocked, r.block_reason) for r in rows] == [(0, False, None)]
