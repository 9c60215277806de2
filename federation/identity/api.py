"""The identity layer over HTTP. Identifiers travel in bodies, never in URLs, and come back masked."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from aiohttp import web
from pydantic import Field
from sqlalchemy import select

from federation.app import principal, services
from federation.audit.service import Record
from federation.identity import service
from federation.identity.idnumber import InvalidIdNumber, mask_id_numbers_in_text, parse_id_number
from federation.identity.models import CredentialStatus, IdentifierType, MatchReview, Person
from federation.web.routing import RESIDENT, Routes, scopes, staff
from federation.web.schema import Input, Output

routes = Routes("identity")

READ = staff("librarian", "doctor", "admin") | scopes("identity.read")
WRITE = staff("librarian", "doctor", "admin") | scopes("identity.write")


class IdentifierIn(Input):
    type: IdentifierType
    value: str = Field(min_length=1, max_length=64)
    institution: str = Field(default="", max_length=32, description="issuing member, for local identifiers")
    kind: str | None = Field(default=None, max_length=40, description="library_card, hospital_record, ...")

    def command(self) -> service.IdentifierInput:
        return service.IdentifierInput(self.type, self.value, self.institution, self.kind)


class IdentifierOut(Output):
    id: str
    type: str
    institution: str
    kind: str | None
    masked: str
    status: str


class PersonOut(Output):
    id: str
    name: str
    birth_date: dt.date | None
    sex: str | None
    status: str
    merged_into: str | None
    identifiers: list[IdentifierOut]


class RegistrationIn(Input):
    name: str = Field(min_length=1, max_length=200)
    identifiers: list[IdentifierIn] = Field(default_factory=list, max_length=20)
    birth_date: dt.date | None = None
    sex: Literal["male", "female"] | None = None
    phone: str | None = Field(default=None, max_length=40)
    home_institution: str | None = Field(default=None, max_length=32)


class RegistrationOut(Output):
    outcome: Literal["existing", "linked", "review", "created"]
    score: float | None
    review_id: str | None
    person: PersonOut


class LookupIn(Input):
    identifier: IdentifierIn
    purpose: str = Field(default="identification", max_length=40)


class CheckIn(Input):
    value: str = Field(min_length=1, max_length=64)


class CheckOut(Output):
    valid: bool
    masked: str | None = None
    birth_date: dt.date | None = None
    sex: str | None = None
    province: str | None = None
    place: str | None = None
    upgraded_from_15: bool = False
    warnings: list[str] = []
    code: str | None = None
    reason: str | None = None


class CredentialStatusIn(Input):
    identifier: IdentifierIn
    status: CredentialStatus
    replacement: str | None = Field(default=None, max_length=64, description="the new card number, when reissued")


class CrossrefIn(Input):
    identifier: IdentifierIn
    target_type: IdentifierType
    target_institution: str = Field(default="", max_length=32)


class CrossrefItem(Output):
    type: str
    institution: str
    kind: str | None
    value: str
    status: str


class CrossrefOut(Output):
    person_id: str
    identifiers: list[CrossrefItem]


class MergeIn(Input):
    survivor_id: str = Field(min_length=1, max_length=64)
    merged_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=500)


class MergeOut(Output):
    id: str
    survivor_id: str
    merged_id: str
    reason: str
    created_at: dt.datetime
    undone_at: dt.datetime | None


class ReviewOut(Output):
    id: str
    person_id: str
    candidate_id: str
    score: float
    reasons: list[str]
    state: str


class ReviewList(Output):
    items: list[ReviewOut]


class ResolutionIn(Input):
    same_person: bool


def person_out(p: Person) -> PersonOut:
    return PersonOut(
        id=p.id,
        name=p.name,
        birth_date=p.birth_date,
        sex=p.sex,
        status=p.status,
        merged_into=p.merged_into_id,
        identifiers=[
            IdentifierOut(
                id=i.id, type=i.type, institution=i.institution_code, kind=i.kind, masked=i.masked, status=i.status
            )
            for i in p.identifiers
        ],
    )


async def _fresh(svc, person_id: str) -> Person:  # noqa: ANN001
    async with svc.db.reader() as s:
        return await service.get_person(s, person_id)


@routes.post(
    "/api/v1/identity/checks",
    access=READ | WRITE,
    body=CheckIn,
    response=CheckOut,
    summary="Validate a national ID number (GB 11643): check digit, birth date, region",
)
async def check_id_number(request: web.Request, body: CheckIn) -> CheckOut:
    try:
        n = parse_id_number(body.value)
    except InvalidIdNumber as e:
        return CheckOut(valid=False, code=e.code, reason=e.reason)
    return CheckOut(
        valid=True,
        masked=service.mask("id_number", n.value),
        birth_date=n.birth_date,
        sex=n.sex,
        province=n.province,
        place=n.place,
        upgraded_from_15=n.upgraded_from_15,
        warnings=list(n.warnings),
    )


@routes.post(
    "/api/v1/identity/persons",
    access=WRITE,
    body=RegistrationIn,
    response=RegistrationOut,
    status=201,
    summary="Find or create the person these details describe (exact on ID number, else scored match)",
    errors=(409,),
)
async def register_person(request: web.Request, body: RegistrationIn) -> RegistrationOut:
    svc = services(request)
    cmd = service.RegisterPerson(
        name=body.name,
        identifiers=[i.command() for i in body.identifiers],
        birth_date=body.birth_date,
        sex=body.sex,
        phone=body.phone,
        home_institution=body.home_institution,
    )
    async with svc.db.uow() as uow:
        reg = await service.register(uow, svc, cmd, actor=principal(request).actor)
        await uow.commit()
    person = await _fresh(svc, reg.person.id)
    return RegistrationOut(outcome=reg.outcome, score=reg.score, review_id=reg.review_id, person=person_out(person))


@routes.get(
    "/api/v1/identity/persons/{person_id}", access=READ, response=PersonOut, summary="One person", errors=(404,)
)
async def get_person(request: web.Request) -> PersonOut:
    svc = services(request)
    who = principal(request)
    person = await _fresh(svc, request.match_info["person_id"])
    async with svc.db.uow() as uow:
        await svc.audit(
            uow,
            Record(
                action="identity.read",
                actor=who.actor,
                actor_institution=who.institution,
                subject_person_id=person.id,
                purpose="identification",
            ),
        )
        await uow.commit()
    return person_out(person)


@routes.post(
    "/api/v1/identity/lookups",
    access=READ,
    body=LookupIn,
    response=PersonOut,
    summary="Find the person holding an identifier (refused for lost or cancelled cards)",
    errors=(403, 404),
)
async def lookup(request: web.Request, body: LookupIn) -> PersonOut:
    svc = services(request)
    who = principal(request)
    async with svc.db.uow() as uow:
        person = await service.resolve_credential(uow.session, svc.cipher, body.identifier.command())
        await svc.audit(
            uow,
            Record(
                action="identity.lookup",
                actor=who.actor,
                actor_institution=who.institution,
                subject_person_id=person.id,
                # free text from the caller: keep no number in it (the audit trail masks its fields too)
                purpose=mask_id_numbers_in_text(body.purpose),
                details={"type": body.identifier.type.value},
            ),
        )
        await uow.commit()
    return person_out(await _fresh(svc, person.id))


@routes.post(
    "/api/v1/identity/persons/{person_id}/identifiers",
    access=WRITE,
    body=IdentifierIn,
    response=PersonOut,
    status=201,
    summary="Link another identifier to a person",
    errors=(404, 409),
)
async def add_identifier(request: web.Request, body: IdentifierIn) -> PersonOut:
    svc = services(request)
    async with svc.db.uow() as uow:
        person = await service.add_identifier(
            uow, svc, request.match_info["person_id"], body.command(), actor=principal(request).actor
        )
        await uow.commit()
    return person_out(await _fresh(svc, person.id))


@routes.post(
    "/api/v1/identity/credential-status",
    access=staff("admin") | scopes("identity.credentials"),
    body=CredentialStatusIn,
    response=IdentifierOut,
    summary="Report a card lost, cancelled or reissued; it stops working at once",
    errors=(404, 409),
)
async def credential_status(request: web.Request, body: CredentialStatusIn) -> IdentifierOut:
    svc = services(request)
    async with svc.db.uow() as uow:
        ident = await service.set_credential_status(
            uow,
            svc,
            body.identifier.command(),
            body.status,
            actor=principal(request).actor,
            replacement=body.replacement,
        )
        await uow.commit()
    return IdentifierOut(
        id=ident.id,
        type=ident.type,
        institution=ident.institution_code,
        kind=ident.kind,
        masked=ident.masked,
        status=ident.status,
    )


@routes.post(
    "/api/v1/identity/crossrefs",
    access=READ,
    body=CrossrefIn,
    response=CrossrefOut,
    summary="Given one identifier, the person's identifiers in a target system",
    errors=(404,),
)
async def crossref(request: web.Request, body: CrossrefIn) -> CrossrefOut:
    svc = services(request)
    who = principal(request)
    async with svc.db.uow() as uow:
        person, items = await service.crossref(
            uow.session, svc, body.identifier.command(), body.target_type, body.target_institution
        )
        await svc.audit(
            uow,
            Record(
                action="identity.crossref",
                actor=who.actor,
                actor_institution=who.institution,
                subject_person_id=person.id,
                details={
                    "from": body.identifier.type.value,
                    "to": body.target_type.value,
                    "institution": body.target_institution,
                },
            ),
        )
        await uow.commit()
    return CrossrefOut(
        person_id=person.id,
        identifiers=[
            CrossrefItem(type=i.type, institution=i.institution_code, kind=i.kind, value=v, status=i.status)
            for i, v in items
        ],
    )


@routes.post(
    "/api/v1/identity/merges",
    access=staff("admin"),
    body=MergeIn,
    response=MergeOut,
    status=201,
    summary="Merge two records of one person (keeps history; can be undone)",
    errors=(404, 409),
)
async def merge(request: web.Request, body: MergeIn) -> MergeOut:
    svc = services(request)
    async with svc.db.uow() as uow:
        record = await service.merge(
            uow, svc, body.survivor_id, body.merged_id, reason=body.reason, actor=principal(request).actor
        )
        await uow.commit()
    return MergeOut.model_validate(record)


@routes.post(
    "/api/v1/identity/merges/{merge_id}/undo",
    access=staff("admin"),
    response=MergeOut,
    summary="Undo a merge",
    errors=(404, 409),
)
async def unmerge(request: web.Request) -> MergeOut:
    svc = services(request)
    async with svc.db.uow() as uow:
        record = await service.unmerge(uow, svc, request.match_info["merge_id"], actor=principal(request).actor)
        await uow.commit()
    return MergeOut.model_validate(record)


@routes.get(
    "/api/v1/identity/reviews",
    access=staff("admin"),
    response=ReviewList,
    summary="Open match reviews: records that may be the same person",
)
async def reviews(request: web.Request) -> ReviewList:
    async with services(request).db.reader() as s:
        rows = (
            await s.execute(
                select(MatchReview).where(MatchReview.state == "open").order_by(MatchReview.created_at).limit(500)
            )
        ).scalars()
        return ReviewList(items=[ReviewOut.model_validate(r) for r in rows])


@routes.post(
    "/api/v1/identity/reviews/{review_id}/resolution",
    access=staff("admin"),
    body=ResolutionIn,
    response=ReviewOut,
    summary="Decide a match review: same person (merge) or distinct",
    errors=(404, 409),
)
async def resolve_review(request: web.Request, body: ResolutionIn) -> ReviewOut:
    svc = services(request)
    async with svc.db.uow() as uow:
        review = await service.resolve_review(
            uow, svc, request.match_info["review_id"], same_person=body.same_person, actor=principal(request).actor
        )
        await uow.commit()
    return ReviewOut.model_validate(review)


@routes.get(
    "/api/v1/me/person",
    access=RESIDENT,
    response=PersonOut,
    summary="My own record: name, linked cards and numbers (masked)",
)
async def my_person(request: web.Request) -> PersonOut:
    who = principal(request)
    assert who.person_id is not None
    return person_out(await _fresh(services(request), who.person_id))
