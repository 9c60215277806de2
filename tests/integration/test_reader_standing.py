"""A desk reads who holds a credential and their standing at its library in one statement
(``service.recognise_standing``); the answer must be the one the identity layer and ``standing.of`` give apart.

Run on SQLite and (with TWINCITY_TEST_DATABASE_URL) on PostgreSQL.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select, update

from federation import demo as demo_world
from federation.db import utcnow
from federation.demo import RESIDENTS
from federation.identity import service as identity
from federation.identity.errors import CredentialInactive, UnknownCredential
from federation.identity.models import Identifier, IdentifierType, Person, PersonStatus
from library.catalog import demo as catalog_demo
from library.circulation import demo as circulation_demo
from library.circulation import policies, service, standing
from library.circulation.models import Borrower, Fine, LibraryPolicy, Loan

LIBRARIES = ("CQL", "SCL", "CDL")


@pytest.fixture
async def demo(svc):  # noqa: ANN001, ANN201
    """The demo world with its loans (one of them overdue) and readers."""

    async def catalogue(svc):  # noqa: ANN001, ANN202
        return await catalog_demo.load(svc, per_library=16)

    await demo_world.load(svc, [catalogue, circulation_demo.load])
    return svc


def _credentials() -> list[service.Credential]:
    """Every kind a desk is shown: social-security card, ID number, a library card with and without its library."""
    found = []
    for r in RESIDENTS[:3]:
        found.append(service.Credential("social_security_card", r.ss_card))
        found.append(service.Credential("id_number", r.id_number))
        found.append(service.Credential("library_card", f"{r.home}{r.ss_card[-6:]}", r.home))
    found.append(service.Credential("library_card", f"{RESIDENTS[0].home}{RESIDENTS[0].ss_card[-6:]}"))
    return found


async def _every_check_in_force(svc) -> None:  # noqa: ANN001
    """An overdue block, a fine block at CDL with an open fine there, and a federation-wide block: every column
    of the statement has something to read."""
    async with svc.db.uow() as uow:
        s = uow.session
        fed = await policies.set_federation(s)
        fed.overdue_block_days = 3  # the demo's overdue loan is 10 days late
        s.add(LibraryPolicy(library="CDL", floating=False, lends_to_other_libraries=True, fine_block_fen=0))
        late = (await s.execute(select(Loan).where(Loan.due_at < utcnow()).limit(1))).scalar_one()
        s.add(Fine(loan_id=late.id, person_id=late.person_id, library="CDL", days=10, amount_fen=100))
        await s.flush()
        await s.execute(
            update(Borrower).where(Borrower.person_id != late.person_id).values(blocked=True, block_reason="逾期未还")
        )
        await uow.commit()


async def test_one_statement_reads_what_two_read(demo):
    await _every_check_in_force(demo)
    now = utcnow()
    seen: list[standing.Standing] = []
    async with demo.db.reader() as s:
        for cred in _credentials():
            for library in LIBRARIES:
                holder, stand = await service.recognise_standing(s, demo, cred, library, now)
                alone = await service.recognise(s, demo, cred)
                assert holder == alone
                assert stand == await standing.of(s, alone.id, library, now), (cred, library)
                seen.append(stand)
    # not a comparison of empty answers: each kind of fact was there to be read
    assert any(x.reader_id is not None for x in seen) and any(x.reader_id is None for x in seen)
    assert any(x.late_loan is not None for x in seen) and any(x.late_loan is None for x in seen)
    assert any(x.owed_fen == 100 for x in seen)
    assert any(x.blocked and x.block_reason == "逾期未还" for x in seen) and any(not x.blocked for x in seen)
    assert any(x.has_borrower for x in seen)


async def test_refusals_are_the_identity_layers(demo):
    now = utcnow()
    async with demo.db.reader() as s:
        with pytest.raises(UnknownCredential):
            await service.recognise_standing(
                s, demo, service.Credential("social_security_card", "ZZ9999999"), "CQL", now
            )
    card = RESIDENTS[1].ss_card
    async with demo.db.uow() as uow:
        await uow.session.execute(
            update(Identifier).where(Identifier.masked.like(f"%{card[-4:]}")).values(status="lost")
        )
        lost = identity.IdentifierInput(IdentifierType.SOCIAL_SECURITY_CARD, card)
        assert (await identity.find_identifier(uow.session, demo.cipher, lost)).status == "lost"
        await uow.commit()
    async with demo.db.reader() as s:
        with pytest.raises(CredentialInactive):
            await service.recognise_standing(s, demo, service.Credential("social_security_card", card), "CQL", now)


async def test_a_card_left_on_a_merged_person_reads_the_survivors_standing(demo):
    """A merge moves the identifiers to the survivor; an identifier still naming the merged person (written before
    merges moved them) is followed to the survivor, and the standing read is the survivor's."""
    survivor = RESIDENTS[0]
    async with demo.db.uow() as uow:
        s = uow.session
        ss = identity.IdentifierInput(IdentifierType.SOCIAL_SECURITY_CARD, survivor.ss_card)
        kept = await identity.credential_holder(s, demo.cipher, ss)
        gone = Person(name="张伟", name_key="zhangwei", status=PersonStatus.MERGED.value, merged_into_id=kept.id)
        s.add(gone)
        await s.flush()
        ident = await identity.find_identifier(s, demo.cipher, ss)
        ident.person_id = gone.id
        await uow.commit()
    now = utcnow() + dt.timedelta(seconds=1)
    async with demo.db.reader() as s:
        holder, stand = await service.recognise_standing(
            s, demo, service.Credential("social_security_card", survivor.ss_card), "CQL", now
        )
        assert holder.id == kept.id
        assert stand == await standing.of(s, kept.id, "CQL", now)
        assert stand.reader_id is not None  # the survivor's record at CQL, not the empty one of the merged person
