"""The identity layer: register and find persons by any identifier, match without one, merge and unmerge.

A valid national ID number is an exact key. Without one, an incoming record is
scored against candidates found by cheap blocking keys and lands in one of three
bands: linked to the best candidate, queued for a person to review (a provisional
person is created so nothing waits), or a new person.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, bindparam, or_, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from federation.audit.service import Record
from federation.db import UnitOfWork, utcnow
from federation.direct import Statement
from federation.identity import matching
from federation.identity.crypto import FieldCipher
from federation.identity.errors import (
    ConflictingDemographics,
    CredentialInactive,
    IdentifierTaken,
    InvalidIdentifier,
    MergeRefused,
    PersonNotFound,
    ReviewClosed,
    UnknownCredential,
)
from federation.identity.idnumber import InvalidIdNumber, mask_id_number, mask_id_numbers_in_text, parse_id_number
from federation.identity.models import (
    CredentialStatus,
    Identifier,
    IdentifierType,
    MatchReview,
    Merge,
    Person,
    PersonStatus,
)
from federation.services import Services

EARLIEST_BIRTH = dt.date(1880, 1, 1)
NATIONAL = (IdentifierType.ID_NUMBER, IdentifierType.SOCIAL_SECURITY_CARD, IdentifierType.RESIDENCE_PERMIT)


@dataclasses.dataclass(frozen=True)
class IdentifierInput:
    type: IdentifierType
    value: str
    institution: str = ""  # member code, for local identifiers
    kind: str | None = None  # for local identifiers: library_card, hospital_record, ...


@dataclasses.dataclass(frozen=True)
class RegisterPerson:
    name: str
    identifiers: Sequence[IdentifierInput] = ()
    birth_date: dt.date | None = None
    sex: str | None = None
    phone: str | None = None
    home_institution: str | None = None


@dataclasses.dataclass(frozen=True)
class Registration:
    person: Person
    outcome: str  # existing, linked, review, created
    score: float | None = None
    review_id: str | None = None


def normalise_value(type_: IdentifierType, value: str) -> str:
    """The canonical form of an identifier; raises InvalidIdentifier with the reason."""
    if type_ is IdentifierType.ID_NUMBER:
        try:
            return parse_id_number(value).value
        except InvalidIdNumber as e:
            raise InvalidIdentifier(f"invalid ID number: {e.reason}", reason_code=e.code) from None
    cleaned = "".join(value.split()).upper()
    if not cleaned or len(cleaned) > 64:
        raise InvalidIdentifier(f"a {type_.value} must have 1 to 64 characters")
    return cleaned


def mask(type_: str, value: str) -> str:
    if type_ == IdentifierType.ID_NUMBER:
        return mask_id_number(value)
    if len(value) <= 4:
        return "*" * len(value)
    return "*" * (len(value) - 4) + value[-4:]


def _free_text(text: str) -> str:
    """Free text stored in clear (a reason, a card kind, a member code) never keeps an ID number in clear."""
    return mask_id_numbers_in_text(text)


PHONE_CONTEXT = "phone"


def context(type_: str, institution: str) -> str:
    """The associated data an identifier's value is encrypted with (and its blind index keyed by)."""
    return f"identifier:{type_}:{institution}"


def _institution_for(inp: IdentifierInput) -> str:
    if inp.type is IdentifierType.LOCAL:
        if not inp.institution:
            raise InvalidIdentifier("a local identifier needs the member institution that issued it")
        return _free_text(inp.institution.upper())
    return ""


def new_identifier(cipher: FieldCipher, person_id: str, inp: IdentifierInput) -> Identifier:
    value = normalise_value(inp.type, inp.value)
    inst = _institution_for(inp)
    ctx = context(inp.type.value, inst)
    return Identifier(
        person_id=person_id,
        type=inp.type.value,
        institution_code=inst,
        kind=_free_text(inp.kind) if inp.kind else inp.kind,
        value_index=cipher.blind_index(value, ctx),
        value_enc=cipher.encrypt(value, ctx),
        masked=mask(inp.type.value, value),
    )


def reveal(cipher: FieldCipher, ident: Identifier) -> str:
    return cipher.decrypt(ident.value_enc, context(ident.type, ident.institution_code))


def _lookup_key(cipher: FieldCipher, inp: IdentifierInput) -> tuple[str, str, str]:
    """(type, institution, blind index): what an identifier is found by; raises InvalidIdentifier."""
    inst = _institution_for(inp)
    index = cipher.blind_index(normalise_value(inp.type, inp.value), context(inp.type.value, inst))
    return inp.type.value, inst, index


async def find_identifier(session: AsyncSession, cipher: FieldCipher, inp: IdentifierInput) -> Identifier | None:
    type_, inst, index = _lookup_key(cipher, inp)
    q = select(Identifier).where(
        Identifier.type == type_, Identifier.institution_code == inst, Identifier.value_index == index
    )
    return (await session.execute(q)).scalar_one_or_none()


async def find_identifiers(
    session: AsyncSession, cipher: FieldCipher, inputs: Sequence[IdentifierInput]
) -> list[Identifier | None]:
    """``find_identifier`` for many identifiers in one query (a bulk load links its patients at once): the
    identifier each input names, or None; an input that does not normalise raises InvalidIdentifier."""
    keys = [_lookup_key(cipher, inp) for inp in inputs]
    found: dict[tuple[str, str, str], Identifier] = {}
    for start in range(0, len(keys), 1000):  # PostgreSQL takes at most 32,767 parameters
        q = select(Identifier).where(
            tuple_(Identifier.type, Identifier.institution_code, Identifier.value_index).in_(keys[start : start + 1000])
        )
        for ident in (await session.execute(q)).scalars():
            found[(ident.type, ident.institution_code, ident.value_index)] = ident
    return [found.get(k) for k in keys]


async def _live(session: AsyncSession, person_id: str) -> Person:
    """Follow merges to the surviving person."""
    seen: set[str] = set()
    person = await session.get(Person, person_id)
    while person is not None and person.status == PersonStatus.MERGED and person.merged_into_id:
        if person.id in seen:
            break
        seen.add(person.id)
        person = await session.get(Person, person.merged_into_id)
    if person is None:
        raise PersonNotFound(f"no person {person_id}")
    return person


async def resolve_credential(session: AsyncSession, cipher: FieldCipher, inp: IdentifierInput) -> Person:
    """The person a presented credential belongs to; a lost, cancelled or replaced card is refused."""
    ident = await find_identifier(session, cipher, inp)
    if ident is None:
        raise UnknownCredential(f"no person holds this {inp.type.value}")
    if ident.status != CredentialStatus.ACTIVE:
        raise CredentialInactive(f"this {inp.type.value} is {ident.status}", credential_status=ident.status)
    return await _live(session, ident.person_id)


@dataclasses.dataclass(frozen=True)
class Holder:
    """Who holds a credential, as a desk needs it: the (surviving) person's id and birth date, without loading the
    person and every identifier they carry."""

    id: str
    birth_date: dt.date | None


def holder_query(*more: Any) -> Select[Any]:
    """``credential_holder``'s statement: the identifier a credential names and its person, found by the bound
    parameters of ``holder_params``; ``more`` columns come after the four ``holder_of`` reads, from tables the
    caller joins to ``Person`` (a desk's checkout reads the reader's standing with them)."""
    return (
        select(Identifier.status, Person.id, Person.birth_date, Person.status, *more)
        .join(Person, Person.id == Identifier.person_id)
        .where(
            Identifier.type == bindparam("p_type"),
            Identifier.institution_code == bindparam("p_inst"),
            Identifier.value_index == bindparam("p_index"),
        )
    )


def holder_params(cipher: FieldCipher, inp: IdentifierInput) -> dict[str, str]:
    """``holder_query``'s parameters for a presented credential; raises InvalidIdentifier."""
    type_, inst, index = _lookup_key(cipher, inp)
    return {"p_type": type_, "p_inst": inst, "p_index": index}


async def holder_of(session: AsyncSession, inp: IdentifierInput, row: Sequence[Any] | None) -> Holder:
    """The holder of a ``holder_query`` row (None: no row), refused as ``resolve_credential`` refuses; a merged
    person (rare) is followed to the survivor."""
    if row is None:
        raise UnknownCredential(f"no person holds this {inp.type.value}")
    status, person_id, birth_date, person_status = row[:4]
    if status != CredentialStatus.ACTIVE:
        raise CredentialInactive(f"this {inp.type.value} is {status}", credential_status=status)
    if person_status == PersonStatus.MERGED:
        person = await _live(session, person_id)
        return Holder(person.id, person.birth_date)
    return Holder(person_id, birth_date)


_HOLDER = Statement(holder_query())


async def credential_holder(session: AsyncSession, cipher: FieldCipher, inp: IdentifierInput) -> Holder:
    """``resolve_credential`` in one statement: the identifier and its person read together. A merged person
    (rare) is followed to the survivor as ``resolve_credential`` does; the refusals are the same."""
    row = (await _HOLDER.run(session, holder_params(cipher, inp))).first()
    return await holder_of(session, inp, row)


async def get_person(session: AsyncSession, person_id: str) -> Person:
    return await _live(session, person_id)


async def _has_id_number(session: AsyncSession, person_id: str) -> bool:
    q = select(Identifier.id).where(
        Identifier.person_id == person_id, Identifier.type == IdentifierType.ID_NUMBER.value
    )
    return (await session.execute(q.limit(1))).first() is not None


async def _attach(uow: UnitOfWork, svc: Services, person: Person, inputs: Sequence[IdentifierInput]) -> int:
    """Link the identifiers not yet linked to ``person``; returns how many were added."""
    added = 0
    for inp in inputs:
        existing = await find_identifier(uow.session, svc.cipher, inp)
        if existing is not None:
            owner = await _live(uow.session, existing.person_id)
            if owner.id != person.id:
                raise IdentifierTaken(f"this {inp.type.value} already belongs to another person")
            continue
        if inp.type is IdentifierType.ID_NUMBER and await _has_id_number(uow.session, person.id):
            # one person, one national number: a second one means these are two people
            raise IdentifierTaken("this person already carries a different ID number")
        uow.session.add(new_identifier(svc.cipher, person.id, inp))
        added += 1
    await uow.session.flush()
    return added


def _demographics(name: str, birth_date: dt.date | None, sex: str | None, phone: str | None) -> matching.Demographics:
    return matching.Demographics(name=name, birth_date=birth_date, sex=sex, phone=phone)


def _new_person(svc: Services, cmd: RegisterPerson, birth_date: dt.date | None, sex: str | None) -> Person:
    keys = sorted(matching.name_keys(cmd.name))
    phone = matching.normalise_phone(cmd.phone) if cmd.phone else None
    return Person(
        name=cmd.name.strip(),
        name_key=keys[0] if keys else "",
        birth_date=birth_date,
        sex=sex,
        phone_enc=svc.cipher.encrypt(phone, PHONE_CONTEXT) if phone else None,
        phone_index=svc.cipher.blind_index(phone, PHONE_CONTEXT) if phone else None,
        home_institution=_free_text(cmd.home_institution) if cmd.home_institution else None,
    )


async def register(uow: UnitOfWork, svc: Services, cmd: RegisterPerson, *, actor: str) -> Registration:
    """Find or create the person these details describe; idempotent for a given ID number."""
    if not cmd.name.strip():
        raise InvalidIdentifier("a person needs a name")
    if mask_id_numbers_in_text(cmd.name) != cmd.name:
        # a number pasted into the wrong field would be stored in clear
        raise InvalidIdentifier("the name holds an ID number; send it as an identifier")
    birth_date, sex = cmd.birth_date, cmd.sex
    if birth_date is not None and not (EARLIEST_BIRTH <= birth_date <= dt.date.today()):
        raise ConflictingDemographics(f"a birth date must lie between {EARLIEST_BIRTH} and today")
    id_inputs = [i for i in cmd.identifiers if i.type is IdentifierType.ID_NUMBER]
    if len({normalise_value(i.type, i.value) for i in id_inputs}) > 1:
        raise ConflictingDemographics("two different ID numbers for one person")
    if id_inputs:
        parsed = parse_id_number(id_inputs[0].value)
        if birth_date and birth_date != parsed.birth_date:
            raise ConflictingDemographics("the birth date differs from the one the ID number carries")
        if sex and sex != parsed.sex:
            raise ConflictingDemographics("the sex differs from the one the ID number carries")
        birth_date, sex = parsed.birth_date, parsed.sex

    # Any identifier we already know decides; the ID number first, as it is the exact key.
    person = await _known_person(uow, svc, cmd)
    if person is not None:
        return await _register_existing(uow, svc, person, cmd, birth_date, sex, bool(id_inputs), actor)

    # Create (or link) under a savepoint: a concurrent registration holding one of the same identifiers
    # wins the unique constraint, and we return its person. When the winner committed after our lookup but
    # before our insert, _attach sees its identifier (read committed) and says IdentifierTaken instead.
    # (On SQLite writers are serialised at BEGIN IMMEDIATE, so this is the PostgreSQL path.)
    try:
        async with uow.session.begin_nested():
            reg = await _create_or_match(uow, svc, cmd, birth_date, sex, bool(id_inputs))
    except (IntegrityError, IdentifierTaken):
        person = await _known_person(uow, svc, cmd)
        if person is None:
            raise
        return await _register_existing(uow, svc, person, cmd, birth_date, sex, bool(id_inputs), actor)
    await _audit_registration(uow, svc, reg.person, reg.outcome, actor, score=reg.score)
    return reg


async def _known_person(uow: UnitOfWork, svc: Services, cmd: RegisterPerson) -> Person | None:
    for inp in sorted(cmd.identifiers, key=lambda i: i.type is not IdentifierType.ID_NUMBER):
        ident = await find_identifier(uow.session, svc.cipher, inp)
        if ident is not None:
            return await _live(uow.session, ident.person_id)
    return None


async def _create_or_match(
    uow: UnitOfWork, svc: Services, cmd: RegisterPerson, birth_date: dt.date | None, sex: str | None, exact: bool
) -> Registration:
    """A new person for an unknown ID number; without one, the scored match decides."""
    best_id, result = None, None
    if not exact:
        demo = _demographics(cmd.name, birth_date, sex, cmd.phone)
        candidates = await _candidates(uow.session, svc, demo)
        best_id, result = matching.best_match(
            demo,
            [(p.id, _demographics(p.name, p.birth_date, p.sex, _phone(svc, p))) for p in candidates],
        )
        if best_id is not None and result.band is matching.Band.LINK:
            person = await _live(uow.session, best_id)
            await _attach(uow, svc, person, cmd.identifiers)
            return Registration(person, "linked", result.score)

    person = _new_person(svc, cmd, birth_date, sex)
    uow.session.add(person)
    await uow.session.flush()
    await _attach(uow, svc, person, cmd.identifiers)
    if result is None:
        return Registration(person, "created")
    if best_id is not None and result.band is matching.Band.REVIEW:
        review = MatchReview(
            person_id=person.id, candidate_id=best_id, score=result.score, reasons=list(result.reasons)
        )
        uow.session.add(review)
        await uow.session.flush()
        return Registration(person, "review", result.score, review.id)
    return Registration(person, "created", result.score if best_id else None)


async def _register_existing(
    uow: UnitOfWork,
    svc: Services,
    person: Person,
    cmd: RegisterPerson,
    birth_date: dt.date | None,
    sex: str | None,
    id_given: bool,
    actor: str,
) -> Registration:
    """A known identifier found ``person``: check the rest agrees, link what is new, write it down."""
    if id_given:
        number = next(i for i in cmd.identifiers if i.type is IdentifierType.ID_NUMBER)
        if await find_identifier(uow.session, svc.cipher, number) is None and await _has_id_number(
            uow.session, person.id
        ):
            raise IdentifierTaken("the other identifiers belong to a person with a different ID number")
        # The birth date and sex came from the ID number: a person on record with others is someone else.
        if person.birth_date is not None and person.birth_date != birth_date:
            raise ConflictingDemographics("the birth date on record differs from the one the ID number carries")
        if person.sex is not None and person.sex != sex:
            raise ConflictingDemographics("the sex on record differs from the one the ID number carries")
        person.birth_date = person.birth_date or birth_date
        person.sex = person.sex or sex
    added = await _attach(uow, svc, person, cmd.identifiers)
    await _audit_registration(uow, svc, person, "existing", actor, attached=added)
    return Registration(person, "existing")


def _phone(svc: Services, p: Person) -> str | None:
    return svc.cipher.decrypt(p.phone_enc, PHONE_CONTEXT) if p.phone_enc else None


async def _candidates(
    session: AsyncSession, svc: Services, demo: matching.Demographics, limit: int = 200
) -> list[Person]:
    conds = []
    keys = matching.name_keys(demo.name)
    if keys:
        conds.append(Person.name_key.in_(sorted(keys)))
    if demo.birth_date:
        conds.append(Person.birth_date == demo.birth_date)
    phone = matching.normalise_phone(demo.phone) if demo.phone else None
    if phone:
        conds.append(Person.phone_index == svc.cipher.blind_index(phone, PHONE_CONTEXT))
    if not conds:
        return []
    q = select(Person).where(Person.status == PersonStatus.ACTIVE, or_(*conds)).limit(limit)
    return list((await session.execute(q)).scalars())


async def _audit_registration(
    uow: UnitOfWork,
    svc: Services,
    person: Person,
    outcome: str,
    actor: str,
    score: float | None = None,
    attached: int | None = None,
) -> None:
    details: dict[str, object] = {"outcome": outcome, "score": score}
    if attached is not None:
        details["attached"] = attached
    await svc.audit(
        uow,
        Record(action="identity.register", actor=actor, subject_person_id=person.id, details=details),
    )


async def add_identifier(uow: UnitOfWork, svc: Services, person_id: str, inp: IdentifierInput, *, actor: str) -> Person:
    person = await _live(uow.session, person_id)
    await _attach(uow, svc, person, [inp])
    await svc.audit(
        uow,
        Record(
            action="identity.identifier_added",
            actor=actor,
            subject_person_id=person.id,
            details={"type": inp.type.value, "institution": inp.institution},
        ),
    )
    return person


async def set_credential_status(
    uow: UnitOfWork,
    svc: Services,
    inp: IdentifierInput,
    status: CredentialStatus,
    *,
    actor: str,
    replacement: str | None = None,
) -> Identifier:
    """Lost, cancelled or reissued (with the new card number): the old credential stops working at once."""
    ident = await find_identifier(uow.session, svc.cipher, inp)
    if ident is None:
        raise UnknownCredential(f"no person holds this {inp.type.value}")
    if status is CredentialStatus.REISSUED and not replacement:
        raise InvalidIdentifier("a reissued card needs the new card number")
    if replacement and normalise_value(inp.type, replacement) == normalise_value(inp.type, inp.value):
        raise InvalidIdentifier("the new card number is the old one")
    ident.status = status.value
    ident.status_changed_at = utcnow()
    if replacement:
        new = IdentifierInput(inp.type, replacement, inp.institution, inp.kind)
        found = await find_identifier(uow.session, svc.cipher, new)
        if found is None:
            found = new_identifier(svc.cipher, ident.person_id, new)
            uow.session.add(found)
            await uow.session.flush()
        elif found.person_id != ident.person_id:
            raise IdentifierTaken("the new card number belongs to another person")
        ident.replaced_by_id = found.id
    await svc.audit(
        uow,
        Record(
            action="identity.credential_status",
            actor=actor,
            subject_person_id=ident.person_id,
            details={"type": ident.type, "status": status.value, "masked": ident.masked},
        ),
    )
    uow.emit(
        "identity.credential_status_changed",
        person_id=ident.person_id,
        identifier_id=ident.id,
        type=ident.type,
        status=status.value,
    )
    return ident


async def crossref(
    session: AsyncSession,
    svc: Services,
    source: IdentifierInput,
    target_type: IdentifierType,
    target_institution: str = "",
) -> tuple[Person, list[tuple[Identifier, str]]]:
    """Given one identifier, the person's identifiers of the target kind (and member, for local ones).

    The source is a presented credential: a lost, cancelled or replaced one is refused as in a lookup.
    """
    person = await resolve_credential(session, svc.cipher, source)
    out = []
    for i in person.identifiers:
        if i.type != target_type.value:
            continue
        if target_institution and i.institution_code != target_institution.upper():
            continue
        value = reveal(svc.cipher, i)
        out.append((i, i.masked if i.type == IdentifierType.ID_NUMBER else value))
    return person, out


async def merge(uow: UnitOfWork, svc: Services, survivor_id: str, merged_id: str, *, reason: str, actor: str) -> Merge:
    survivor = await _live(uow.session, survivor_id)
    merged = await _live(uow.session, merged_id)
    if survivor.id == merged.id:
        raise MergeRefused("these are already one person")
    numbers = {i.value_index for i in survivor.identifiers if i.type == IdentifierType.ID_NUMBER}
    other = {i.value_index for i in merged.identifiers if i.type == IdentifierType.ID_NUMBER}
    if numbers and other and numbers != other:
        raise MergeRefused("the two persons carry different ID numbers")
    moved = [i.id for i in merged.identifiers]
    for ident in list(merged.identifiers):
        ident.person_id = survivor.id
    merged.status = PersonStatus.MERGED.value
    merged.merged_into_id = survivor.id
    reason = _free_text(reason)
    record = Merge(survivor_id=survivor.id, merged_id=merged.id, moved_identifier_ids=moved, reason=reason, actor=actor)
    uow.session.add(record)
    await uow.session.flush()
    await svc.audit(
        uow,
        Record(
            action="identity.merge",
            actor=actor,
            subject_person_id=survivor.id,
            details={"merged": merged.id, "merge": record.id, "reason": reason},
        ),
    )
    uow.emit("identity.persons_merged", survivor_id=survivor.id, merged_id=merged.id, merge_id=record.id)
    return record


async def unmerge(uow: UnitOfWork, svc: Services, merge_id: str, *, actor: str) -> Merge:
    record = await uow.session.get(Merge, merge_id)
    if record is None:
        raise PersonNotFound(f"no merge {merge_id}")
    if record.undone_at is not None:
        raise MergeRefused("this merge was already undone")
    merged = await uow.session.get(Person, record.merged_id)
    assert merged is not None
    survivor = await uow.session.get(Person, record.survivor_id)
    assert survivor is not None
    if merged.merged_into_id != record.survivor_id or survivor.status != PersonStatus.ACTIVE:
        # e.g. the survivor was merged into a third person since: its identifiers moved on with it
        raise MergeRefused("the persons have changed since; undo the later merge first")
    for ident_id in record.moved_identifier_ids:
        ident = await uow.session.get(Identifier, ident_id)
        if ident is not None and ident.person_id == record.survivor_id:
            ident.person_id = merged.id
    merged.status = PersonStatus.ACTIVE.value
    merged.merged_into_id = None
    record.undone_at = utcnow()
    record.undone_by = actor
    await uow.session.flush()
    await svc.audit(
        uow,
        Record(
            action="identity.unmerge",
            actor=actor,
            subject_person_id=record.survivor_id,
            details={"merged": merged.id, "merge": record.id},
        ),
    )
    uow.emit("identity.persons_unmerged", survivor_id=record.survivor_id, merged_id=merged.id, merge_id=record.id)
    return record


async def resolve_review(
    uow: UnitOfWork, svc: Services, review_id: str, *, same_person: bool, actor: str
) -> MatchReview:
    review = await uow.session.get(MatchReview, review_id)
    if review is None:
        raise PersonNotFound(f"no review {review_id}")
    if review.state != "open":
        raise ReviewClosed(f"review {review_id} is already {review.state}")
    if same_person:
        await merge(uow, svc, review.candidate_id, review.person_id, reason=f"match review {review.id}", actor=actor)
    review.state = "linked" if same_person else "distinct"
    review.resolved_by = actor
    review.resolved_at = utcnow()
    await uow.session.flush()
    await svc.audit(
        uow,
        Record(
            action="identity.review_resolved",
            actor=actor,
            subject_person_id=review.candidate_id,
            details={"review": review.id, "person": review.person_id, "state": review.state},
        ),
    )
    return review
