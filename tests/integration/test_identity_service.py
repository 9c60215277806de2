"""The identity layer against a real database: registration, matching, credentials, merges, cross-references, audit."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from federation.audit.models import AuditEntry
from federation.audit.service import verify
from federation.db import OutboxMessage
from federation.errors import DomainError
from federation.identity import service
from federation.identity.errors import (
    ConflictingDemographics,
    CredentialInactive,
    IdentifierTaken,
    InvalidIdentifier,
    MergeRefused,
    ReviewClosed,
    UnknownCredential,
)
from federation.identity.idnumber import check_digit
from federation.identity.models import (
    CredentialStatus,
    Identifier,
    IdentifierType,
    MatchReview,
    Merge,
    Person,
    PersonStatus,
)
from federation.identity.service import IdentifierInput, RegisterPerson

ACTOR = "staff:test"
ID = IdentifierType.ID_NUMBER
SS = IdentifierType.SOCIAL_SECURITY_CARD
LOCAL = IdentifierType.LOCAL


def id_number(region: str, birth: str, seq: str) -> str:
    first17 = region + birth + seq
    return first17 + check_digit(first17)


def old_form(number: str) -> str:
    """The 15-digit (GB 11643-1989) form of an 18-character number born in the 1900s."""
    assert number[6:8] == "19"
    return number[:6] + number[8:17]


# 张伟, male (sequence 231 ends odd), born 1985-03-12
ZHANG = id_number("500103", "19850312", "231")
# 王芳, female, born 1990-07-21
WANG = id_number("500106", "19900721", "142")
# 吴强, male, born 1983-02-28, ends in X
WU = id_number("511002", "19830228", "955")
assert WU.endswith("X")


async def register(svc, cmd: RegisterPerson, actor: str = ACTOR) -> service.Registration:
    async with svc.db.uow() as uow:
        reg = await service.register(uow, svc, cmd, actor=actor)
        await uow.commit()
    return reg


async def count(svc, model) -> int:
    async with svc.db.reader() as s:
        return (await s.execute(select(func.count()).select_from(model))).scalar_one()


async def resolve(svc, inp: IdentifierInput) -> Person:
    """The person a credential resolves to. The desks' one-statement ``credential_holder`` must agree every time:
    the same person and birth date, or the same refusal."""
    async with svc.db.reader() as s:
        try:
            p = await service.resolve_credential(s, svc.cipher, inp)
        except DomainError as e:
            with pytest.raises(type(e)) as refused:
                await service.credential_holder(s, svc.cipher, inp)
            assert (refused.value.code, refused.value.extra) == (e.code, e.extra)
            raise
        holder = await service.credential_holder(s, svc.cipher, inp)
        assert (holder.id, holder.birth_date) == (p.id, p.birth_date)
        return p


async def person(svc, person_id: str) -> Person:
    async with svc.db.reader() as s:
        p = await s.get(Person, person_id)
        assert p is not None
        return p


def zhang(*extra: IdentifierInput, value: str = ZHANG, **kw) -> RegisterPerson:
    return RegisterPerson(name="张伟", identifiers=[IdentifierInput(ID, value), *extra], **kw)


# ---------------------------------------------------------------------------------------------- registration


async def test_register_with_id_number_creates_person_with_demographics_from_the_number(svc):
    reg = await register(svc, zhang(phone="13800230001", home_institution="CQL"))
    assert reg.outcome == "created"
    p = await person(svc, reg.person.id)
    assert (p.name, p.birth_date, p.sex, p.status) == ("张伟", dt.date(1985, 3, 12), "male", PersonStatus.ACTIVE)
    assert p.home_institution == "CQL"
    [ident] = p.identifiers
    assert ident.type == ID and ident.institution_code == "" and ident.status == CredentialStatus.ACTIVE
    assert ident.masked == "500103********2317" == ZHANG[:6] + "*" * 8 + ZHANG[-4:]
    assert ZHANG.encode() not in ident.value_enc and ZHANG not in ident.value_index
    assert service.reveal(svc.cipher, ident) == ZHANG

    reg_f = await register(svc, RegisterPerson(name="王芳", identifiers=[IdentifierInput(ID, WANG)]))
    assert (reg_f.person.birth_date, reg_f.person.sex) == (dt.date(1990, 7, 21), "female")


@pytest.mark.parametrize(
    "variant",
    [
        WU,
        WU.lower(),  # lower-case x
        f"{WU[:6]} {WU[6:14]} {WU[14:].lower()}",  # spaces
        f"  {WU[:6]}-{WU[6:]}  ",
        old_form(WU),  # the 15-digit form upgrades to the same number
        "".join(chr(ord(c) + 0xFEE0) for c in WU),  # full-width digits and X
    ],
)
async def test_same_number_in_any_form_finds_the_same_person(svc, variant):
    first = await register(svc, RegisterPerson(name="吴强", identifiers=[IdentifierInput(ID, WU)]))
    assert first.outcome == "created"
    again = await register(svc, RegisterPerson(name="吴强", identifiers=[IdentifierInput(ID, variant)]))
    assert again.outcome == "existing"
    assert again.person.id == first.person.id
    assert await count(svc, Person) == 1
    assert await count(svc, Identifier) == 1


async def test_fifteen_digit_registration_is_stored_as_eighteen(svc):
    reg = await register(svc, zhang(value=old_form(ZHANG)))
    assert reg.outcome == "created"
    assert reg.person.birth_date == dt.date(1985, 3, 12)
    found = await resolve(svc, IdentifierInput(ID, ZHANG))
    assert found.id == reg.person.id
    [ident] = (await person(svc, reg.person.id)).identifiers
    assert service.reveal(svc.cipher, ident) == ZHANG


async def test_conflicting_birth_date_or_sex_is_refused_and_nothing_is_written(svc):
    with pytest.raises(ConflictingDemographics) as e:
        await register(svc, zhang(birth_date=dt.date(1985, 3, 13)))
    assert e.value.status == 422 and e.value.code == "identity.conflicting_demographics"
    with pytest.raises(ConflictingDemographics):
        await register(svc, zhang(sex="female"))
    # the matching ones are fine
    ok = await register(svc, zhang(birth_date=dt.date(1985, 3, 12), sex="male"))
    assert ok.outcome == "created"
    # and a conflict on a later registration of the same number is refused too
    with pytest.raises(ConflictingDemographics):
        await register(svc, zhang(birth_date=dt.date(1986, 3, 12)))
    assert await count(svc, Person) == 1


async def test_two_different_id_numbers_in_one_registration_are_refused(svc):
    with pytest.raises(ConflictingDemographics):
        await register(svc, zhang(IdentifierInput(ID, WANG)))
    assert await count(svc, Person) == 0


async def test_bad_check_digit_is_an_invalid_identifier(svc):
    bad = ZHANG[:17] + ("0" if ZHANG[17] != "0" else "1")
    with pytest.raises(InvalidIdentifier) as e:
        await register(svc, zhang(value=bad))
    assert e.value.status == 422
    assert e.value.code == "identity.invalid_identifier"
    assert e.value.extra["reason_code"] == "id_number.checksum"
    assert bad not in str(e.value) and ZHANG[:17] not in str(e.value)
    assert await count(svc, Person) == 0


async def test_a_name_holding_an_id_number_is_refused(svc):
    with pytest.raises(InvalidIdentifier):
        await register(svc, RegisterPerson(name=f"张伟 {ZHANG}"))
    assert await count(svc, Person) == 0


async def test_social_security_card_and_library_card_find_the_person(svc):
    created = await register(
        svc,
        zhang(
            IdentifierInput(SS, "CQ0000001"),
            IdentifierInput(LOCAL, "CQL000001", "CQL", "library_card"),
        ),
    )
    assert created.outcome == "created"

    by_card = await register(svc, RegisterPerson(name="张伟", identifiers=[IdentifierInput(SS, " cq0000001 ")]))
    assert (by_card.outcome, by_card.person.id) == ("existing", created.person.id)

    # the member code is case-insensitive; the card is the member's own number
    by_library = await register(
        svc, RegisterPerson(name="张伟", identifiers=[IdentifierInput(LOCAL, "CQL000001", "cql", "library_card")])
    )
    assert (by_library.outcome, by_library.person.id) == ("existing", created.person.id)
    assert (await resolve(svc, IdentifierInput(LOCAL, "cql000001", "CQL"))).id == created.person.id

    # the same number issued by another member is another identifier
    with pytest.raises(UnknownCredential):
        await resolve(svc, IdentifierInput(LOCAL, "CQL000001", "SCL"))
    # a local identifier needs its member
    with pytest.raises(InvalidIdentifier):
        await resolve(svc, IdentifierInput(LOCAL, "CQL000001"))

    # registering by card with the ID number links nothing new; with a new card links the card
    more = await register(svc, zhang(IdentifierInput(LOCAL, "H-778", "CQH1", "hospital_record")))
    assert (more.outcome, more.person.id) == ("existing", created.person.id)
    assert (await resolve(svc, IdentifierInput(LOCAL, "h-778", "CQH1"))).id == created.person.id
    assert await count(svc, Person) == 1
    assert await count(svc, Identifier) == 4


async def test_identifier_of_another_person_is_taken(svc):
    zhang_reg = await register(svc, zhang(IdentifierInput(SS, "CQ0000001")))
    wang_reg = await register(
        svc, RegisterPerson(name="王芳", identifiers=[IdentifierInput(ID, WANG), IdentifierInput(SS, "CQ0000002")])
    )

    # Zhang's number with Wang's card
    with pytest.raises(IdentifierTaken) as e:
        await register(svc, zhang(IdentifierInput(SS, "CQ0000002")))
    assert e.value.status == 409 and e.value.code == "identity.identifier_taken"

    # a new number with Zhang's card: the card decides the person, who already has another number
    newcomer = id_number("510104", "19880119", "517")
    with pytest.raises(IdentifierTaken):
        await register(
            svc,
            RegisterPerson(name="杨磊", identifiers=[IdentifierInput(ID, newcomer), IdentifierInput(SS, "CQ0000001")]),
        )
    with pytest.raises(UnknownCredential):
        await resolve(svc, IdentifierInput(ID, newcomer))

    # adding Zhang's card to Wang, or a second number to Wang
    async with svc.db.uow() as uow:
        with pytest.raises(IdentifierTaken):
            await service.add_identifier(uow, svc, wang_reg.person.id, IdentifierInput(SS, "CQ0000001"), actor=ACTOR)
    async with svc.db.uow() as uow:
        with pytest.raises(IdentifierTaken):
            await service.add_identifier(uow, svc, wang_reg.person.id, IdentifierInput(ID, newcomer), actor=ACTOR)

    assert await count(svc, Person) == 2
    assert await count(svc, Identifier) == 4
    assert (await resolve(svc, IdentifierInput(SS, "CQ0000001"))).id == zhang_reg.person.id
    assert (await resolve(svc, IdentifierInput(SS, "CQ0000002"))).id == wang_reg.person.id


async def test_a_card_registered_without_a_number_gets_the_number_later(svc):
    first = await register(svc, RegisterPerson(name="张伟", identifiers=[IdentifierInput(SS, "CQ0000001")]))
    assert first.outcome == "created"
    assert first.person.birth_date is None
    later = await register(svc, zhang(IdentifierInput(SS, "CQ0000001")))
    assert (later.outcome, later.person.id) == ("existing", first.person.id)
    p = await person(svc, first.person.id)
    assert (p.birth_date, p.sex) == (dt.date(1985, 3, 12), "male")
    assert (await resolve(svc, IdentifierInput(ID, ZHANG))).id == first.person.id


# ---------------------------------------------------------------------------------------------- scored matching


async def test_scored_match_links_same_name_birth_date_and_phone(svc):
    existing = await register(svc, zhang(phone="13800230001"))
    reg = await register(
        svc,
        RegisterPerson(
            name="张伟",
            birth_date=dt.date(1985, 3, 12),
            phone="+86 138-0023-0001",
            identifiers=[IdentifierInput(LOCAL, "CDL-42", "CDL", "library_card")],
        ),
    )
    assert reg.outcome == "linked"
    assert reg.person.id == existing.person.id
    assert reg.score is not None and reg.score >= 0.9
    assert await count(svc, Person) == 1
    assert (await resolve(svc, IdentifierInput(LOCAL, "CDL-42", "CDL"))).id == existing.person.id
    assert await count(svc, MatchReview) == 0


async def test_scored_match_sends_a_homophone_to_review(svc):
    existing = await register(svc, RegisterPerson(name="张三", birth_date=dt.date(1990, 1, 2), phone="13900000001"))
    assert existing.outcome == "created"
    reg = await register(
        svc,
        RegisterPerson(name="章三", birth_date=dt.date(1990, 1, 2), identifiers=[IdentifierInput(SS, "SC0000099")]),
    )
    assert reg.outcome == "review"
    assert reg.review_id is not None
    assert reg.person.id != existing.person.id
    assert reg.score is not None and 0.6 <= reg.score < 0.9
    async with svc.db.reader() as s:
        review = await s.get(MatchReview, reg.review_id)
    assert review is not None
    assert (review.person_id, review.candidate_id, review.state) == (reg.person.id, existing.person.id, "open")
    assert any("homophone" in r for r in review.reasons)
    # the provisional person exists and holds the card, so nothing waits on the review
    assert (await resolve(svc, IdentifierInput(SS, "SC0000099"))).id == reg.person.id
    assert await count(svc, Person) == 2


async def test_scored_match_creates_a_new_person_when_nothing_agrees(svc):
    await register(svc, RegisterPerson(name="张三", birth_date=dt.date(1990, 1, 2), phone="13900000001"))
    reg = await register(svc, RegisterPerson(name="李四", birth_date=dt.date(1970, 5, 6), phone="13700000002"))
    assert reg.outcome == "created"
    assert reg.review_id is None
    assert await count(svc, Person) == 2
    assert await count(svc, MatchReview) == 0


async def test_resolve_review_same_person_merges(svc):
    existing = await register(svc, RegisterPerson(name="张三", birth_date=dt.date(1990, 1, 2)))
    reg = await register(
        svc, RegisterPerson(name="章三", birth_date=dt.date(1990, 1, 2), identifiers=[IdentifierInput(SS, "SC0000099")])
    )
    assert reg.outcome == "review"
    async with svc.db.uow() as uow:
        review = await service.resolve_review(uow, svc, reg.review_id, same_person=True, actor="staff:admin")
        await uow.commit()
    assert (review.state, review.resolved_by) == ("linked", "staff:admin")
    assert review.resolved_at is not None
    provisional = await person(svc, reg.person.id)
    assert (provisional.status, provisional.merged_into_id) == (PersonStatus.MERGED, existing.person.id)
    assert (await resolve(svc, IdentifierInput(SS, "SC0000099"))).id == existing.person.id
    async with svc.db.reader() as s:
        assert (await service.get_person(s, reg.person.id)).id == existing.person.id
        merges = (await s.execute(select(Merge))).scalars().all()
    assert [(m.survivor_id, m.merged_id) for m in merges] == [(existing.person.id, reg.person.id)]

    async with svc.db.uow() as uow:
        with pytest.raises(ReviewClosed):
            await service.resolve_review(uow, svc, reg.review_id, same_person=False, actor="staff:admin")


async def test_resolve_review_distinct_keeps_both(svc):
    existing = await register(svc, RegisterPerson(name="张三", birth_date=dt.date(1990, 1, 2)))
    reg = await register(svc, RegisterPerson(name="章三", birth_date=dt.date(1990, 1, 2)))
    async with svc.db.uow() as uow:
        review = await service.resolve_review(uow, svc, reg.review_id, same_person=False, actor="staff:admin")
        await uow.commit()
    assert review.state == "distinct"
    for pid in (existing.person.id, reg.person.id):
        assert (await person(svc, pid)).status == PersonStatus.ACTIVE
    assert await count(svc, Merge) == 0
    async with svc.db.reader() as s:
        actions = (await s.execute(select(AuditEntry.action))).scalars().all()
    assert "identity.review_resolved" in actions


# ---------------------------------------------------------------------------------------------- merges


async def _two_records(svc) -> tuple[Person, Person]:
    a = await register(
        svc, zhang(IdentifierInput(SS, "CQ0000001"), IdentifierInput(LOCAL, "CQL000001", "CQL", "library_card"))
    )
    b = await register(
        svc,
        RegisterPerson(
            name="Zhang Wei",
            identifiers=[IdentifierInput(LOCAL, "CDL000777", "CDL", "library_card"), IdentifierInput(SS, "SC0000777")],
        ),
    )
    # a romanised name alone scores between the bands: a provisional person under review
    assert (a.outcome, b.outcome) == ("created", "review")
    assert a.person.id != b.person.id
    return a.person, b.person


async def test_merge_and_unmerge_restore_identifiers_and_keep_history(svc):
    a, b = await _two_records(svc)
    async with svc.db.uow() as uow:
        record = await service.merge(uow, svc, a.id, b.id, reason="same library user", actor="staff:admin")
        await uow.commit()
    assert (record.survivor_id, record.merged_id, record.undone_at) == (a.id, b.id, None)
    assert len(record.moved_identifier_ids) == 2
    for inp in (
        IdentifierInput(LOCAL, "CDL000777", "CDL"),
        IdentifierInput(SS, "SC0000777"),
        IdentifierInput(ID, ZHANG),
    ):
        assert (await resolve(svc, inp)).id == a.id
    merged = await person(svc, b.id)
    assert (merged.status, merged.merged_into_id, merged.identifiers) == (PersonStatus.MERGED, a.id, [])
    assert len((await person(svc, a.id)).identifiers) == 5

    # merging again is refused: they are one person now
    async with svc.db.uow() as uow:
        with pytest.raises(MergeRefused):
            await service.merge(uow, svc, a.id, b.id, reason="again", actor="staff:admin")

    async with svc.db.uow() as uow:
        undone = await service.unmerge(uow, svc, record.id, actor="staff:admin2")
        await uow.commit()
    assert undone.undone_at is not None and undone.undone_by == "staff:admin2"
    assert (await resolve(svc, IdentifierInput(LOCAL, "CDL000777", "CDL"))).id == b.id
    assert (await resolve(svc, IdentifierInput(SS, "SC0000777"))).id == b.id
    assert (await resolve(svc, IdentifierInput(SS, "CQ0000001"))).id == a.id
    assert (await resolve(svc, IdentifierInput(LOCAL, "CQL000001", "CQL"))).id == a.id
    restored = await person(svc, b.id)
    assert (restored.status, restored.merged_into_id) == (PersonStatus.ACTIVE, None)
    assert {i.id for i in restored.identifiers} == set(record.moved_identifier_ids)
    assert len((await person(svc, a.id)).identifiers) == 3

    # the merge stays on record, marked undone, and cannot be undone twice
    async with svc.db.reader() as s:
        rows = (await s.execute(select(Merge))).scalars().all()
        topics = (await s.execute(select(OutboxMessage.topic))).scalars().all()
    assert len(rows) == 1 and rows[0].undone_at is not None and rows[0].reason == "same library user"
    assert {"identity.persons_merged", "identity.persons_unmerged"} <= set(topics)
    async with svc.db.uow() as uow:
        with pytest.raises(MergeRefused):
            await service.unmerge(uow, svc, record.id, actor="staff:admin")


async def test_a_credential_still_naming_a_merged_record_finds_the_survivor(svc):
    """A merge moves the identifiers to the survivor; one left naming the merged record (written by an older
    version, or by hand) still leads to the survivor, through both lookups."""
    a, b = await _two_records(svc)
    async with svc.db.uow() as uow:
        await service.merge(uow, svc, a.id, b.id, reason="same library user", actor="staff:admin")
        await uow.commit()
    inp = IdentifierInput(SS, "SC0000777")
    async with svc.db.uow() as uow:
        ident = await service.find_identifier(uow.session, svc.cipher, inp)
        assert ident is not None and ident.person_id == a.id
        ident.person_id = b.id
        await uow.commit()
    assert (await resolve(svc, inp)).id == a.id


async def test_merge_of_two_different_id_numbers_is_refused(svc):
    a = await register(svc, zhang())
    b = await register(svc, RegisterPerson(name="王芳", identifiers=[IdentifierInput(ID, WANG)]))
    async with svc.db.uow() as uow:
        with pytest.raises(MergeRefused) as e:
            await service.merge(uow, svc, a.person.id, b.person.id, reason="typo", actor="staff:admin")
    assert e.value.status == 409 and e.value.code == "identity.merge_refused"
    async with svc.db.uow() as uow:
        with pytest.raises(MergeRefused):
            await service.merge(uow, svc, a.person.id, a.person.id, reason="self", actor="staff:admin")
    assert await count(svc, Merge) == 0
    assert (await person(svc, b.person.id)).status == PersonStatus.ACTIVE


async def test_unmerge_is_refused_once_the_survivor_was_merged_on(svc):
    a, b = await _two_records(svc)
    c = (await register(svc, RegisterPerson(name="张伟", identifiers=[IdentifierInput(SS, "CQ0000555")]))).person
    async with svc.db.uow() as uow:
        first = await service.merge(uow, svc, a.id, b.id, reason="1", actor="staff:admin")
        await uow.commit()
    async with svc.db.uow() as uow:
        second = await service.merge(uow, svc, c.id, a.id, reason="2", actor="staff:admin")
        await uow.commit()
    assert (await resolve(svc, IdentifierInput(SS, "SC0000777"))).id == c.id
    # undoing the first would leave b without its identifiers (they moved on to c)
    async with svc.db.uow() as uow:
        with pytest.raises(MergeRefused):
            await service.unmerge(uow, svc, first.id, actor="staff:admin")
    # in order it works
    for record in (second, first):
        async with svc.db.uow() as uow:
            await service.unmerge(uow, svc, record.id, actor="staff:admin")
            await uow.commit()
    assert (await resolve(svc, IdentifierInput(SS, "SC0000777"))).id == b.id
    assert (await resolve(svc, IdentifierInput(ID, ZHANG))).id == a.id
    assert (await resolve(svc, IdentifierInput(SS, "CQ0000555"))).id == c.id


# ---------------------------------------------------------------------------------------------- credentials


async def test_lost_card_is_refused(svc):
    reg = await register(svc, zhang(IdentifierInput(SS, "CQ0000001")))
    async with svc.db.uow() as uow:
        ident = await service.set_credential_status(
            uow, svc, IdentifierInput(SS, "CQ0000001"), CredentialStatus.LOST, actor="staff:admin"
        )
        await uow.commit()
    assert ident.status == CredentialStatus.LOST and ident.status_changed_at is not None
    with pytest.raises(CredentialInactive) as e:
        await resolve(svc, IdentifierInput(SS, "CQ0000001"))
    assert e.value.status == 403 and e.value.code == "identity.credential_inactive"
    assert e.value.extra["credential_status"] == "lost"
    # other credentials of the person still work; registering by the lost card still finds the person
    assert (await resolve(svc, IdentifierInput(ID, ZHANG))).id == reg.person.id
    async with svc.db.reader() as s:
        topics = (await s.execute(select(OutboxMessage.topic))).scalars().all()
    assert "identity.credential_status_changed" in topics
    with pytest.raises(UnknownCredential):
        async with svc.db.uow() as uow:
            await service.set_credential_status(
                uow, svc, IdentifierInput(SS, "CQ9999999"), CredentialStatus.LOST, actor="staff:admin"
            )


async def test_reissued_card_moves_to_its_replacement(svc):
    reg = await register(svc, zhang(IdentifierInput(SS, "CQ0000001")))
    other = await register(
        svc, RegisterPerson(name="王芳", identifiers=[IdentifierInput(ID, WANG), IdentifierInput(SS, "CQ0000002")])
    )
    async with svc.db.uow() as uow:
        with pytest.raises(InvalidIdentifier):
            await service.set_credential_status(
                uow, svc, IdentifierInput(SS, "CQ0000001"), CredentialStatus.REISSUED, actor="staff:admin"
            )
    async with svc.db.uow() as uow:
        with pytest.raises(InvalidIdentifier):
            await service.set_credential_status(
                uow,
                svc,
                IdentifierInput(SS, "CQ0000001"),
                CredentialStatus.REISSUED,
                actor="staff:admin",
                replacement="cq0000001",
            )
    async with svc.db.uow() as uow:
        with pytest.raises(IdentifierTaken):
            await service.set_credential_status(
                uow,
                svc,
                IdentifierInput(SS, "CQ0000001"),
                CredentialStatus.REISSUED,
                actor="staff:admin",
                replacement="CQ0000002",
            )
    assert (await resolve(svc, IdentifierInput(SS, "CQ0000001"))).id == reg.person.id  # unchanged

    async with svc.db.uow() as uow:
        old = await service.set_credential_status(
            uow,
            svc,
            IdentifierInput(SS, "CQ0000001"),
            CredentialStatus.REISSUED,
            actor="staff:admin",
            replacement="CQ1000001",
        )
        await uow.commit()
    with pytest.raises(CredentialInactive) as e:
        await resolve(svc, IdentifierInput(SS, "CQ0000001"))
    assert e.value.extra["credential_status"] == "reissued"
    assert (await resolve(svc, IdentifierInput(SS, "CQ1000001"))).id == reg.person.id
    async with svc.db.reader() as s:
        new = (await s.execute(select(Identifier).where(Identifier.id == old.replaced_by_id))).scalar_one()
    assert (new.person_id, new.type, new.status) == (reg.person.id, SS, CredentialStatus.ACTIVE)
    assert (await resolve(svc, IdentifierInput(SS, "CQ0000002"))).id == other.person.id


# ---------------------------------------------------------------------------------------------- cross-references


async def test_crossref_reveals_local_cards_and_masks_id_numbers(svc):
    reg = await register(
        svc,
        zhang(
            IdentifierInput(SS, "CQ0000001"),
            IdentifierInput(LOCAL, "CQL000001", "CQL", "library_card"),
            IdentifierInput(LOCAL, "SCL000009", "SCL", "library_card"),
        ),
    )
    async with svc.db.reader() as s:
        p, items = await service.crossref(s, svc, IdentifierInput(ID, ZHANG), LOCAL, "cql")
        assert p.id == reg.person.id
        assert [(i.institution_code, i.kind, v) for i, v in items] == [("CQL", "library_card", "CQL000001")]

        _, all_local = await service.crossref(s, svc, IdentifierInput(ID, ZHANG), LOCAL)
        assert sorted(v for _, v in all_local) == ["CQL000001", "SCL000009"]

        _, numbers = await service.crossref(s, svc, IdentifierInput(LOCAL, "CQL000001", "CQL"), ID)
        assert [v for _, v in numbers] == ["500103********2317"]
        assert ZHANG not in repr(numbers)

        _, none = await service.crossref(s, svc, IdentifierInput(ID, ZHANG), LOCAL, "CDL")
        assert none == []

        with pytest.raises(UnknownCredential):
            await service.crossref(s, svc, IdentifierInput(SS, "CQ7777777"), LOCAL, "CQL")

    async with svc.db.uow() as uow:
        await service.set_credential_status(
            uow, svc, IdentifierInput(SS, "CQ0000001"), CredentialStatus.LOST, actor="staff:admin"
        )
        await uow.commit()
    async with svc.db.reader() as s:
        with pytest.raises(CredentialInactive):
            await service.crossref(s, svc, IdentifierInput(SS, "CQ0000001"), LOCAL, "CQL")


# ---------------------------------------------------------------------------------------------- audit


async def test_every_write_is_audited_and_the_chain_verifies(svc):
    a, b = await _two_records(svc)  # 2 registrations
    await register(svc, zhang())  # existing
    async with svc.db.uow() as uow:
        await service.add_identifier(
            uow, svc, a.id, IdentifierInput(LOCAL, "H-1", "CQH1", "hospital_record"), actor=ACTOR
        )
        await uow.commit()
    async with svc.db.uow() as uow:
        record = await service.merge(uow, svc, a.id, b.id, reason="dup", actor="staff:admin")
        await uow.commit()
    async with svc.db.uow() as uow:
        await service.unmerge(uow, svc, record.id, actor="staff:admin")
        await uow.commit()
    async with svc.db.uow() as uow:
        await service.set_credential_status(
            uow, svc, IdentifierInput(SS, "CQ0000001"), CredentialStatus.LOST, actor="staff:admin"
        )
        await uow.commit()
    await register(svc, RegisterPerson(name="张三", birth_date=dt.date(1990, 1, 2)))
    review = await register(svc, RegisterPerson(name="章三", birth_date=dt.date(1990, 1, 2)))
    async with svc.db.uow() as uow:
        await service.resolve_review(uow, svc, review.review_id, same_person=True, actor="staff:admin")
        await uow.commit()

    async with svc.db.reader() as s:
        entries = (await s.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars().all()
        result = await verify(s, svc.audit_key)
    actions = [e.action for e in entries]
    assert actions == [
        "identity.register",
        "identity.register",
        "identity.register",
        "identity.identifier_added",
        "identity.merge",
        "identity.unmerge",
        "identity.credential_status",
        "identity.register",
        "identity.register",
        "identity.merge",
        "identity.review_resolved",
    ]
    outcomes = [e.details.get("outcome") for e in entries if e.action == "identity.register"]
    assert outcomes == ["created", "review", "existing", "created", "review"]
    assert result.ok and result.checked == len(entries)
    assert all(e.actor for e in entries)
    assert {e.subject_person_id for e in entries[:7]} <= {a.id, b.id}
    for e in entries:
        assert ZHANG not in repr(e.details) and old_form(ZHANG) not in repr(e.details)
