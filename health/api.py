"""The doctor's side of mutual recognition over HTTP: find the patient, read prior results with verdicts, decide.

Identifiers travel in bodies only (``POST /patient-lookups``); URLs carry the person id. Every read of results is
authorised and audited by :mod:`health.access`; residents read their own results and who looked at them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import orjson
from aiohttp import web
from pydantic import Field
from sqlalchemy import select

from federation.app import client_address, principal, services
from federation.audit.models import AuditEntry
from federation.audit.service import Record
from federation.errors import InvalidInput
from federation.identity import service as identity
from federation.identity.errors import CredentialInactive, UnknownCredential
from federation.identity.models import IdentifierType
from federation.web.routing import RESIDENT, Principal, Routes, scopes, staff
from federation.web.schema import Input, Output
from health import access, decisions, recognition, results
from health.fhir.outcome import fhir_response

routes = Routes("health")

EARLIEST, LATEST = dt.date(2000, 1, 1), dt.date(2100, 12, 31)  # the programme's figures lie well inside
DOCTOR = staff("doctor")
READER = DOCTOR | scopes("health.read")
ADMIN = staff("admin")


class CredentialIn(Input):
    type: Literal["id_number", "social_security_card", "hospital_record"]
    value: str = Field(min_length=1, max_length=64)
    institution: str = Field(
        default="", max_length=32, description="the issuing hospital of a hospital_record; default: the caller's"
    )


class LookupIn(Input):
    credential: CredentialIn


class PatientOut(Output):
    """Without the patient's consent or an override: the id, the name masked after its first character, nothing
    else."""

    id: str
    name: str
    sex: str | None
    birth_date: dt.date | None
    identifiers: list[str] = Field(description="masked, e.g. 'id_number 500103********2314'")


class LookupOut(Output):
    patient: PatientOut
    consent: bool = Field(description="whether the patient's consent covers your institution now")
    override_active: bool


class VerdictOut(Output):
    recognised: bool
    mark: Literal["HR"] | None = Field(description="HR when the result is recognised")
    reasons: list[str]
    item: str | None
    item_name: str | None
    catalogue_version: int | None
    valid_until: dt.date | None


class ResultOut(Output):
    id: str
    resource_type: str
    category: str | None
    code_system: str | None
    code: str | None
    title: str | None
    value: str | None
    interpretation: list[str]
    reference_range: str | None
    status: str | None
    effective_at: dt.datetime | None
    issued_at: dt.datetime | None
    hospital: str
    hospital_name: str
    hospital_city: str | None
    verdict: VerdictOut


class ResultGroup(Output):
    key: str
    title: str
    latest: dt.datetime | None
    results: list[ResultOut]


class PriorResultsOut(Output):
    patient: str
    basis: Literal["consent", "override", "self"]
    flagged: bool = Field(description="read under an emergency override; it will be reviewed")
    count: int = Field(description="results on this page")
    recognised: int
    groups: list[ResultGroup]
    next: str | None = Field(description="pass as `after` for the older results; null on the last page")


class PriorResultsQuery(Input):
    category: Literal["laboratory", "imaging"] | None = None
    item: str | None = Field(default=None, max_length=40, description="a recognition catalogue item code")
    since: dt.date | None = None
    limit: int = Field(default=50, ge=1, le=results.MAX_RESULTS)
    after: str | None = Field(default=None, max_length=200, description="the `next` cursor of the previous page")


class OverrideIn(Input):
    reason: str = Field(min_length=10, max_length=500, description="the clinical reason, e.g. unconscious patient")


class OverrideOut(Output):
    id: str
    person_id: str
    actor: str
    institution: str | None
    reason: str
    created_at: dt.datetime
    expires_at: dt.datetime
    reviewed_at: dt.datetime | None
    reviewed_by: str | None
    review_outcome: str | None
    review_note: str | None


class OverrideList(Output):
    items: list[OverrideOut]


class ReviewIn(Input):
    outcome: Literal["justified", "unjustified"]
    note: str = Field(default="", max_length=500)


class DecisionIn(Input):
    result: str = Field(min_length=1, max_length=32, description="the result's id")
    decision: Literal["accepted", "declined"]
    reason_code: Literal["01", "02", "03", "04", "05", "06", "07", "08"] | None = None
    reason_text: str | None = Field(default=None, max_length=500)
    note: str | None = Field(default=None, max_length=4000)


class DecisionOut(Output):
    id: str
    result_id: str
    person_id: str
    decision: str
    reason_code: str | None
    reason_text: str | None
    note: str | None
    recognised: bool
    reasons: list[str]
    item_code: str | None
    issuing_institution: str
    deciding_institution: str | None
    decided_at: dt.datetime


class FiguresQuery(Input):
    since: dt.date | None = Field(
        default=None, ge=EARLIEST, le=LATEST, description="first day of decisions counted; default: a year ago"
    )
    until: dt.date | None = Field(
        default=None, ge=EARLIEST, le=LATEST, description="last day of decisions counted, included; default: today"
    )


class AuditEventQuery(Input):
    patient: str | None = Field(default=None, max_length=64, description="administrators: whose events")
    limit: int = Field(default=50, ge=1, le=500)


# -- helpers ---------------------------------------------------------------------------------------------------


def _credential(who: Principal, c: CredentialIn) -> identity.IdentifierInput:
    if c.type == "hospital_record":
        issuer = (c.institution or who.institution or "").upper()
        return identity.IdentifierInput(IdentifierType.LOCAL, c.value, issuer, "hospital_record")
    return identity.IdentifierInput(IdentifierType(c.type), c.value)


def _verdict(v: Any) -> dict[str, Any]:
    """A verdict as :class:`VerdictOut` writes it (keys in its field order)."""
    return {
        "recognised": v.recognised,
        "mark": "HR" if v.recognised else None,
        "reasons": [str(r) for r in v.reasons],
        "item": v.item_code,
        "item_name": v.item_name,
        "catalogue_version": v.catalogue_version,
        "valid_until": v.valid_until,
    }


def _result(r: results.PriorResult) -> dict[str, Any]:
    """A result as :class:`ResultOut` writes it (keys in its field order)."""
    row, body = r.row, r.row.body
    return {
        "id": row.id,
        "resource_type": row.resource_type,
        "category": row.category,
        "code_system": row.code_system,
        "code": row.code,
        "title": results.display(body),
        "value": results.value_text(body),
        "interpretation": results.interpretation(body),
        "reference_range": results.reference_range(body),
        "status": row.status,
        "effective_at": row.effective_at,
        "issued_at": row.issued_at,
        "hospital": r.hospital_code,
        "hospital_name": r.hospital_name,
        "hospital_city": r.hospital_city,
        "verdict": _verdict(r.verdict),
    }


async def _prior_results(request: web.Request, person_id: str, query: PriorResultsQuery) -> web.Response:
    """The page as :class:`PriorResultsOut`, written by orjson from plain values: the same bytes the model writes
    (a test holds them to it), without validating fifty results the service has just read and judged itself."""
    svc, who = services(request), principal(request)
    after = None
    if query.after:
        after = results.parse_cursor(query.after)
        if after is None:
            raise InvalidInput("`after` is not a cursor this service gave out")
    filters = results.Filters(query.category, query.item, query.since, query.limit, after)
    grant, found = await access.read_with_grant(
        svc,
        who,
        person_id,
        lambda s, g: results.prior_results(s, g.person_id, filters, persons=g.persons),
        action="health.prior_results",
        client=client_address(request),
        details={k: str(v) for k, v in query.model_dump(exclude_none=True, exclude={"limit", "after"}).items()},
    )
    found, last = found
    page = {
        "patient": grant.person_id,
        "basis": grant.basis.value,
        "flagged": grant.flagged,
        "count": len(found),
        "recognised": sum(r.verdict.recognised for r in found),
        "groups": [
            {"key": key, "title": title, "latest": items[0].issued, "results": [_result(r) for r in items]}
            for key, title, items in results.group_by_item(found)
        ],
        "next": results.cursor(last) if last is not None else None,
    }
    body = orjson.dumps(page, option=orjson.OPT_UTC_Z)
    return web.Response(body=body, content_type="application/json", charset="utf-8")


# -- routes ----------------------------------------------------------------------------------------------------


@routes.post(
    "/api/v1/health/patient-lookups",
    access=READER,
    body=LookupIn,
    response=LookupOut,
    summary="Find a patient by ID card, social-security card or a hospital record number (in the body, not the URL)",
    errors=(403, 404),
)
async def lookup(request: web.Request, body: LookupIn) -> LookupOut:
    svc, who = services(request), principal(request)
    inp = _credential(who, body.credential)

    async def record(outcome: str, person_id: str | None) -> None:
        async with svc.db.uow() as uow:
            await svc.audit(
                uow,
                Record(
                    action="health.lookup",
                    actor=who.actor,
                    actor_institution=who.institution,
                    subject_person_id=person_id,
                    purpose=access.PURPOSE,
                    outcome=outcome,
                    client_address=client_address(request),
                    details={"credential": body.credential.type},
                ),
            )
            await uow.commit()

    try:
        async with svc.db.reader() as s:
            person = await identity.resolve_credential(s, svc.cipher, inp)
            _, grant = await access.check(s, who, person.id)
    except UnknownCredential:
        await record("not_found", None)
        raise
    except CredentialInactive:
        await record("inactive", None)  # the card's holder is not named: a lost card identifies nobody
        raise
    await record("ok", person.id)
    # without the patient's consent (or an override) the doctor learns who it is only as far as the card shows
    shown = grant is not None
    return LookupOut(
        patient=PatientOut(
            id=person.id,
            name=person.name if shown else _masked_name(person.name),
            sex=person.sex if shown else None,
            birth_date=person.birth_date if shown else None,
            identifiers=[f"{i.type} {i.masked}" for i in person.identifiers if i.status == "active"] if shown else [],
        ),
        consent=grant is not None and grant.basis is access.Basis.CONSENT,
        override_active=grant is not None and grant.basis is access.Basis.OVERRIDE,
    )


def _masked_name(name: str) -> str:
    """张伟 → 张*, 欧阳娜娜 → 欧***: enough for the doctor to see the card matches, not a disclosure."""
    return name[:1] + "*" * max(1, len(name) - 1)


@routes.get(
    "/api/v1/health/patients/{person_id}/prior-results",
    access=READER,
    query=PriorResultsQuery,
    response=PriorResultsOut,
    summary="Every prior result from every member hospital, grouped by item, newest first, each with its verdict",
    errors=(403, 404),
)
async def prior_results(request: web.Request, query: PriorResultsQuery) -> web.Response:
    return await _prior_results(request, request.match_info["person_id"], query)


@routes.get(
    "/api/v1/me/results",
    access=RESIDENT,
    query=PriorResultsQuery,
    response=PriorResultsOut,
    summary="My own results from every member hospital, with the verdict a doctor would see",
)
async def my_results(request: web.Request, query: PriorResultsQuery) -> web.Response:
    return await _prior_results(request, principal(request).person_id or "", query)


@routes.post(
    "/api/v1/health/patients/{person_id}/overrides",
    access=DOCTOR,
    body=OverrideIn,
    response=OverrideOut,
    status=201,
    summary="Emergency override: read this patient's results without consent for 24 hours; recorded and reviewed",
    errors=(404, 422),
)
async def open_override(request: web.Request, body: OverrideIn) -> OverrideOut:
    svc, who = services(request), principal(request)
    override = await access.open_override(
        svc, who, request.match_info["person_id"], body.reason, client=client_address(request)
    )
    return OverrideOut.model_validate(override)


@routes.get(
    "/api/v1/health/overrides",
    access=ADMIN,
    response=OverrideList,
    summary="Emergency overrides waiting for review, oldest first",
)
async def pending_overrides(request: web.Request) -> OverrideList:
    async with services(request).db.reader() as s:
        rows = await access.pending_overrides(s)
    return OverrideList(items=[OverrideOut.model_validate(o) for o in rows])


@routes.post(
    "/api/v1/health/overrides/{override_id}/review",
    access=ADMIN,
    body=ReviewIn,
    response=OverrideOut,
    summary="Review an emergency override: justified, or unjustified (it ends at once)",
    errors=(404, 409),
)
async def review_override(request: web.Request, body: ReviewIn) -> OverrideOut:
    svc, who = services(request), principal(request)
    async with svc.db.uow() as uow:
        override = await access.review_override(
            uow, svc, request.match_info["override_id"], outcome=body.outcome, note=body.note, actor=who.actor
        )
        await uow.commit()
    return OverrideOut.model_validate(override)


@routes.post(
    "/api/v1/health/decisions",
    access=DOCTOR,
    body=DecisionIn,
    response=DecisionOut,
    status=201,
    summary="Accept a prior result, or decline it with a reason code 01-08",
    errors=(403, 404, 422),
)
async def decide(request: web.Request, body: DecisionIn) -> DecisionOut:
    svc, who = services(request), principal(request)
    cmd = decisions.NewDecision(body.result, body.decision, body.reason_code, body.reason_text, body.note)
    decisions.check(cmd)
    async with svc.db.reader() as s:
        row = await decisions.result_for_decision(s, body.result)
    grant = await access.authorise(
        svc, who, row.person_id or "", action="health.decision.read", client=client_address(request)
    )
    async with svc.db.uow() as uow:
        decision = await decisions.record(uow, svc, cmd, grant, actor=who.actor, institution=who.institution)
        await uow.commit()
    return DecisionOut.model_validate(decision)


@routes.get(
    "/api/v1/health/figures",
    access=ADMIN,
    query=FiguresQuery,
    summary="Recognition rate per hospital, item and city pair; declined reasons; repeat tests avoided per month",
)
async def figures(request: web.Request, query: FiguresQuery) -> dict[str, Any]:
    end = query.until or recognition.today_in_china()
    start = query.since or end - dt.timedelta(days=365)
    if start > end:
        raise InvalidInput("`since` must not be after `until`")
    async with services(request).db.reader() as s:
        return await decisions.figures(s, start, end)


@routes.get(
    "/api/v1/health/audit-events",
    access=RESIDENT | ADMIN,
    query=AuditEventQuery,
    summary="Reads of a patient's health data as FHIR AuditEvents (a searchset Bundle): residents see their own",
    errors=(422,),
)
async def audit_events(request: web.Request, query: AuditEventQuery) -> web.Response:
    who = principal(request)
    person_id = who.person_id if who.kind == "resident" else query.patient
    if not person_id:
        raise InvalidInput("name the patient")
    q = (
        select(AuditEntry)
        .where(AuditEntry.subject_person_id == person_id, AuditEntry.purpose == access.PURPOSE)
        .order_by(AuditEntry.seq.desc())
        .limit(query.limit)
    )
    async with services(request).db.reader() as s:
        rows = list((await s.execute(q)).scalars())
    base = str(request.url.origin()) + "/fhir/"
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        # the newest ``_count`` events; a total only when this page holds them all
        **({"total": len(rows)} if len(rows) < query.limit else {}),
        "entry": [{"resource": access.audit_event(e, base), "search": {"mode": "match"}} for e in rows],
    }
    return fhir_response(bundle)
