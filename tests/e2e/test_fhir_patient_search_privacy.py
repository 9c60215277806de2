"""Patient search by identifier: a resident learns nothing about other people's cards, and every search, even one
that finds nobody, is in the audit trail."""

from __future__ import annotations

from sqlalchemy import select

from federation.audit.models import AuditEntry
from federation.demo import RESIDENTS
from federation.identity import service as identity
from federation.identity.models import CredentialStatus, IdentifierType
from tests.conftest import token_for

ME, OTHER = RESIDENTS[0], RESIDENTS[1]
SSC = "https://twincity.example/fhir/sid/social-security-card"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def searches(svc) -> list[AuditEntry]:
    async with svc.db.reader() as s:
        q = select(AuditEntry).where(AuditEntry.action == "health.fhir.search").order_by(AuditEntry.seq)
        return list((await s.execute(q)).scalars())


async def search(client, headers, card: str):
    resp = await client.post("/fhir/Patient/_search", data=f"identifier={SSC}|{card}", headers={**headers, **FORM})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_a_resident_learns_nothing_of_other_peoples_cards(client, demo):
    async with demo.db.uow() as uow:
        await identity.set_credential_status(
            uow,
            demo,
            identity.IdentifierInput(IdentifierType.SOCIAL_SECURITY_CARD, OTHER.ss_card),
            CredentialStatus.LOST,
            actor="test",
        )
        await uow.commit()
    me = await token_for(client, ME.id_number)

    lost = await search(client, me, OTHER.ss_card)
    unknown = await search(client, me, "CQ9999999")
    mine = await search(client, me, ME.ss_card)
    # a lost card of someone else answers exactly as a number nobody holds
    assert lost["total"] == unknown["total"] == 0 and "entry" not in lost and "entry" not in unknown
    assert "lost" not in str(lost)
    assert mine["total"] == 1

    entries = await searches(demo)
    assert [e.outcome for e in entries[-3:]] == ["inactive", "not_found", "ok"]
    assert entries[-3].subject_person_id is None  # a resident's probe names nobody, not even in the trail

    # staff are told why a card no longer finds anyone, and the trail names the card's holder
    doctor = await token_for(client, "doctor@SCH1")
    told = await search(client, doctor, OTHER.ss_card)
    assert "lost" in str(told)
    last = (await searches(demo))[-1]
    assert last.outcome == "inactive" and last.subject_person_id is not None
