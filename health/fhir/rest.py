"""The FHIR R4 REST endpoint for reading and searching results: ``/fhir/metadata``, read, search, ``$lastn``.

Every answer is ``application/fhir+json``, every error an OperationOutcome. Before any data about a person leaves,
:func:`health.access.authorise` decides and records the attempt. Identifiers never travel in URLs: a Patient is
found by identifier through ``POST /fhir/Patient/_search`` only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web
from multidict import MultiMapping
from sqlalchemy import select

from federation.app import OPERATIONS_KEY, client_address, principal, services
from federation.audit.service import Record
from federation.errors import NotFound
from federation.identity import service as identity
from federation.identity.errors import CredentialInactive, UnknownCredential
from federation.identity.idnumber import is_valid_id_number
from federation.identity.models import CredentialStatus, IdentifierType, Person
from federation.web.routing import PUBLIC, RESIDENT, Principal, UnsupportedMediaType, scopes, staff
from health import access, recognition
from health.fhir import capability, search
from health.fhir.outcome import fhir_response, fhir_routes, issue
from health.fhir.search import SearchError
from health.models import ResourceLink, StoredResource

routes = fhir_routes()

READERS = staff("doctor") | RESIDENT | scopes("health.read")
ID_NUMBER_SYSTEM = "urn:oid:2.16.156.10011.1.3"
SOCIAL_SECURITY_SYSTEM = "https://twincity.example/fhir/sid/social-security-card"
IDENTIFIER_SYSTEMS = {
    ID_NUMBER_SYSTEM: IdentifierType.ID_NUMBER,
    SOCIAL_SECURITY_SYSTEM: IdentifierType.SOCIAL_SECURITY_CARD,
}
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
VERDICT_TYPES = frozenset({"Observation", "DiagnosticReport", "ImagingStudy"})
READ_TYPES = ("Observation", "DiagnosticReport", "ImagingStudy", "Provenance")
PATIENT_PARAMS = {"_id", "_count", "_format", "_pretty"}  # _count is accepted; a search finds one patient at most
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
FORM = "application/x-www-form-urlencoded"


class GoneResource(NotFound):
    code = "fhir.gone"
    status = 410
    title = "Gone"


class ResourceNotFound(NotFound):
    code = "fhir.not_found"


def base_url(request: web.Request) -> str:
    """The absolute base every link and fullUrl starts with: the configured public URL, else this request's."""
    public = services(request).settings.public_url
    root = public.rstrip("/") if public else str(request.url.origin())
    return f"{root}/fhir"


def _as_lists(params: MultiMapping[str]) -> dict[str, list[str]]:
    return {k: params.getall(k) for k in params}


async def _form(request: web.Request) -> dict[str, list[str]]:
    """A ``_search`` POST: form-encoded parameters (and any in the URL, which must not be identifiers)."""
    if request.content_type != FORM:
        raise UnsupportedMediaType(f"send the search parameters as {FORM}, not {request.content_type or 'nothing'}")
    merged = _as_lists(request.query)
    for key, values in _as_lists(await request.post()).items():
        merged.setdefault(key, []).extend(str(v) for v in values)
    return merged


def _person_to_search(who: Principal, patient: str | None) -> str:
    """The patient a search is about: the one named, or a resident's own; no one else may search without one."""
    if patient is not None:
        return patient
    if who.kind == "resident" and who.person_id:
        return who.person_id
    raise SearchError("name the patient (patient=<id>): searches across patients are not offered")


def _respond(data: dict[str, Any], row: StoredResource | None = None) -> web.Response:
    headers = {}
    if row is not None:
        headers["ETag"] = f'W/"{row.version}"'
        headers["Last-Modified"] = row.last_updated.strftime("%a, %d %b %Y %H:%M:%S GMT")
    return fhir_response(data, headers=headers)


def _with_verdicts(rows: Sequence[Any], verdicts: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        search.with_verdict(r.body, verdicts.get(r.id)) if r.resource_type in VERDICT_TYPES else r.body for r in rows
    ]


async def _judge(session: Any, rows: Sequence[Any]) -> dict[str, Any]:
    """Verdicts by resource id, for the rows that carry one (StoredResource objects or rows of search.COLUMNS)."""
    judged = [r for r in rows if r.resource_type in VERDICT_TYPES]
    if not judged:
        return {}
    verdicts = await recognition.judge_rows(session, judged)
    return {r.id: v for r, v in zip(judged, verdicts, strict=True)}


# -- the CapabilityStatement ----------------------------------------------------------------------------------------


@routes.get("/fhir/metadata", access=PUBLIC, summary="FHIR CapabilityStatement", document=False)
async def metadata(request: web.Request) -> web.Response:
    ops = request.app.get(OPERATIONS_KEY, [])
    posts = {op.path for op in ops if op.method == "POST"}
    statement = capability.statement(
        base_url(request), bundle_ingest="/fhir" in posts, ndjson_import="/fhir/$import" in posts
    )
    return fhir_response(statement)


# -- Patient --------------------------------------------------------------------------------------------------------


def patient_resource(person: Person) -> dict[str, Any]:
    """The federated Patient of a person: name, gender, birth date, and identifiers masked (the value itself is
    absent, marked ``masked``; the masked form is in ``type.text``)."""
    identifiers = []
    for ident in person.identifiers:
        if ident.status != CredentialStatus.ACTIVE:
            continue
        if ident.type == IdentifierType.ID_NUMBER:
            system, label = ID_NUMBER_SYSTEM, "居民身份证号码"
        elif ident.type == IdentifierType.SOCIAL_SECURITY_CARD:
            system, label = SOCIAL_SECURITY_SYSTEM, "社会保障卡号"
        else:
            continue
        identifiers.append(
            {
                "use": "official",
                "type": {"text": f"{label} {ident.masked}"},
                "system": system,
                "_value": {"extension": [{"url": DATA_ABSENT, "valueCode": "masked"}]},
            }
        )
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": person.id,
        "meta": {"lastUpdated": person.updated_at.isoformat()},
        "active": True,
    }
    if identifiers:
        resource["identifier"] = identifiers
    resource["name"] = [{"text": person.name}]
    resource["gender"] = person.sex if person.sex in ("male", "female") else "unknown"
    if person.birth_date:
        resource["birthDate"] = person.birth_date.isoformat()
    return resource


async def _patient(request: web.Request, person_id: str, action: str, details: dict[str, Any]) -> dict[str, Any]:
    svc = services(request)
    grant = await access.authorise(
        svc, principal(request), person_id, action=action, client=client_address(request), details=details
    )
    async with svc.db.reader() as s:
        person = await access.live_person(s, grant.person_id)
        return patient_resource(person)


def _patient_bundle(
    request: web.Request, patient: dict[str, Any] | None, outcome: dict[str, Any] | None = None
) -> dict[str, Any]:
    base = base_url(request)
    entries: list[tuple[dict[str, Any], str]] = [(patient, "match")] if patient else []
    if outcome is not None:
        entries.append((outcome, "outcome"))
    params = [("_id", patient["id"])] if patient else []
    self_url = search.link_url(base, "Patient", params) if patient else f"{base}/Patient/_search"
    return search.searchset(entries, base=base, total=len(entries) - (outcome is not None), links=[("self", self_url)])


@routes.get("/fhir/Patient", access=READERS, summary="FHIR search: Patient (_id)", document=False)
async def search_patients(request: web.Request) -> web.Response:
    params = _as_lists(request.query)
    search.reject_unknown(params, PATIENT_PARAMS, "Patient search by GET")
    return await _patient_search(request, params)


@routes.post(
    "/fhir/Patient/_search", access=READERS, summary="FHIR search: Patient by identifier (form body)", document=False
)
async def search_patients_post(request: web.Request) -> web.Response:
    if "identifier" in request.query:
        raise SearchError("identifiers never travel in URLs: send identifier=system|value in the form body")
    params = await _form(request)
    search.reject_unknown(params, PATIENT_PARAMS | {"identifier"}, "Patient search")
    return await _patient_search(request, params)


async def _patient_search(request: web.Request, params: dict[str, list[str]]) -> web.Response:
    search.check_format(params.get("_format", ()))
    for raw in params.get("_count", ()):
        search.parse_count(raw)
    who = principal(request)
    ids, identifiers = params.get("_id", []), params.get("identifier", [])
    if len(ids) + len(identifiers) > 1 or any("," in v for v in ids + identifiers):
        raise SearchError("search for one patient at a time: one _id or one identifier")
    if identifiers:
        found, why, holder = await _find_by_identifier(request, identifiers[0])
        if found is not None and who.kind == "resident" and found != who.person_id:
            found = None  # a resident finds only themselves: someone else's number is as good as unknown
        if found is None:
            # no active holder: an empty searchset (the reason only for staff and systems), and the attempt recorded
            await _record_miss(request, holder if who.kind != "resident" else None, "inactive" if why else "not_found")
            return fhir_response(_patient_bundle(request, None, why if who.kind != "resident" else None))
        person_id, by = found, "identifier"
    elif ids:
        if not _ID.fullmatch(ids[0].strip()):
            raise SearchError("_id does not hold a valid resource id")
        person_id, by = ids[0].strip(), "_id"
    else:
        person_id, by = _person_to_search(who, None), "self"
    try:
        patient = await _patient(
            request, person_id, "health.fhir.search", {"type": "Patient", "interaction": "search-type", "by": by}
        )
    except access.PatientNotFound:
        return fhir_response(_patient_bundle(request, None))
    return fhir_response(_patient_bundle(request, patient))


async def _record_miss(request: web.Request, person_id: str | None, outcome: str) -> None:
    """A Patient search by identifier that found nobody is a sensitive read too: who asked, when, and (for a card
    no longer valid) whose card it was."""
    svc, who = services(request), principal(request)
    async with svc.db.uow() as uow:
        await svc.audit(
            uow,
            Record(
                action="health.fhir.search",
                actor=who.actor,
                actor_institution=who.institution,
                subject_person_id=person_id,
                purpose=access.PURPOSE,
                outcome=outcome,
                client_address=client_address(request),
                details={"type": "Patient", "interaction": "search-type", "by": "identifier"},
            ),
        )
        await uow.commit()


async def _find_by_identifier(request: web.Request, raw: str) -> tuple[str | None, dict[str, Any] | None, str | None]:
    """The id of the person holding ``system|value``; when nobody does, None, with an OperationOutcome when the
    card is no longer valid (the searchset then says why it is empty) and the id of the card's holder."""
    system, sep, value = raw.partition("|")
    if not sep:
        system, value = "", raw
    value = value.strip()
    if not value:
        raise SearchError("identifier needs a value: identifier=system|value")
    if system:
        kind = IDENTIFIER_SYSTEMS.get(system.strip())
        if kind is None:
            known = ", ".join(sorted(IDENTIFIER_SYSTEMS))
            raise SearchError(f"identifier system not searched here; use one of {known}")
    else:
        kind = IdentifierType.ID_NUMBER if is_valid_id_number(value) else IdentifierType.SOCIAL_SECURITY_CARD
    svc = services(request)
    async with svc.db.reader() as s:
        inp = identity.IdentifierInput(kind, value)
        try:
            person = await identity.resolve_credential(s, svc.cipher, inp)
        except UnknownCredential:
            return None, None, None
        except CredentialInactive as e:
            state = e.extra.get("credential_status", "inactive")
            text = f"the {kind.value} is {state}: it no longer identifies a patient"
            held = await identity.find_identifier(s, svc.cipher, inp)
            outcome = {"resourceType": "OperationOutcome", "issue": [issue("not-found", text, severity="warning")]}
            return None, outcome, held.person_id if held else None
    return person.id, None, None


@routes.get("/fhir/Patient/{id}", access=READERS, summary="FHIR read: Patient", document=False)
async def read_patient(request: web.Request) -> web.Response:
    pid = request.match_info["id"]
    if not _ID.fullmatch(pid):
        raise ResourceNotFound(f"no Patient {search.shown(pid, 64)}")
    return fhir_response(
        await _patient(request, pid, "health.fhir.read", {"type": "Patient", "id": pid, "interaction": "read"})
    )


# -- Observation and DiagnosticReport search, $lastn ------------------------------------------------------------


async def _search_results(request: web.Request, rtype: str, params: dict[str, list[str]]) -> web.Response:
    sp = search.parse_search(rtype, params)
    who = principal(request)
    person_id = _person_to_search(who, sp.patient)
    svc = services(request)

    async def read(s: Any, grant: access.Grant) -> tuple[search.Page, list[Any], list[Any], dict[str, Any]]:
        pg = await search.page(s, sp, grant.persons or await search.merged_into(s, grant.person_id))
        includes = await search.included_results(s, pg.rows, pg.person_ids) if sp.include_results else []
        seen = {r.id for r in pg.rows}
        includes = [r for r in includes if r.id not in seen]
        provenance = await search.provenances(s, pg.rows) if sp.revinclude_provenance else []
        provenance = [r for r in provenance if r.id not in seen]
        return pg, includes, provenance, await _judge(s, pg.rows + includes)

    _, (pg, includes, provenance, verdicts) = await access.read_with_grant(
        svc,
        who,
        person_id,
        read,
        action="health.fhir.search",
        client=client_address(request),
        details={"type": rtype, "interaction": "search-type"},
    )
    base = base_url(request)
    entries = [(b, "match") for b in _with_verdicts(pg.rows, verdicts)]
    entries += [(b, "include") for b in _with_verdicts(includes, verdicts)]
    entries += [(r.body, "include") for r in provenance]
    echo = list(sp.echo)
    here = echo + ([("_cursor", sp.cursor.encode())] if sp.cursor else [])
    links = [("self", search.link_url(base, rtype, here)), ("first", search.link_url(base, rtype, echo))]
    if pg.previous is not None:
        links.append(("previous", search.link_url(base, rtype, echo + [("_cursor", pg.previous.encode())])))
    if pg.next is not None:
        links.append(("next", search.link_url(base, rtype, echo + [("_cursor", pg.next.encode())])))
    return fhir_response(search.searchset(entries, base=base, total=pg.total, links=links))


@routes.get("/fhir/Observation/$lastn", access=READERS, summary="FHIR operation: Observation $lastn", document=False)
async def lastn(request: web.Request) -> web.Response:
    spec = search.parse_lastn(_as_lists(request.query))
    who = principal(request)
    person_id = _person_to_search(who, spec.patient)
    svc = services(request)
    grant = await access.authorise(
        svc,
        who,
        person_id,
        action="health.fhir.search",
        client=client_address(request),
        details={"type": "Observation", "interaction": "operation", "operation": "$lastn"},
    )
    async with svc.db.reader() as s:
        persons = grant.persons or await search.merged_into(s, grant.person_id)
        rows = await search.lastn_rows(s, spec, persons)
        verdicts = await _judge(s, rows)
    base = base_url(request)
    entries = [(b, "match") for b in _with_verdicts(rows, verdicts)]
    links = [("self", search.link_url(base, "Observation/$lastn", spec.echo))]
    return fhir_response(search.searchset(entries, base=base, total=len(entries), links=links))


def _search_routes(rtype: str) -> None:
    async def search_get(request: web.Request) -> web.Response:
        return await _search_results(request, rtype, _as_lists(request.query))

    async def search_post(request: web.Request) -> web.Response:
        return await _search_results(request, rtype, await _form(request))

    search_get.__name__ = f"search_{rtype.lower()}"
    search_post.__name__ = f"search_{rtype.lower()}_post"
    summary = f"FHIR search: {rtype}"
    routes.get(f"/fhir/{rtype}", access=READERS, summary=summary, document=False)(search_get)
    routes.post(f"/fhir/{rtype}/_search", access=READERS, summary=f"{summary} (form body)", document=False)(search_post)


for _rtype in search.RESULT_TYPES:
    _search_routes(_rtype)


# -- read -----------------------------------------------------------------------------------------------------------


async def _owner(session: Any, row: StoredResource) -> str | None:
    """Whose data a stored resource is: its subject, or for a Provenance the subject of what it names."""
    if row.person_id is not None:
        return row.person_id
    if row.resource_type != "Provenance":
        return None
    q = (
        select(StoredResource.person_id)
        .join(ResourceLink, ResourceLink.target_id == StoredResource.id)
        .where(ResourceLink.source_id == row.id, ResourceLink.rel == "target", StoredResource.person_id.is_not(None))
        .limit(1)
    )
    return (await session.execute(q)).scalar_one_or_none()


async def _read(request: web.Request, rtype: str) -> web.Response:
    rid = request.match_info["id"]
    missing = ResourceNotFound(f"no {rtype} {search.shown(rid, 64)}")
    if not _ID.fullmatch(rid):
        raise missing
    svc = services(request)
    async with svc.db.reader() as s:
        q = select(StoredResource).where(StoredResource.id == rid, StoredResource.resource_type == rtype)
        row = (await s.execute(q)).scalar_one_or_none()
        owner = await _owner(s, row) if row is not None else None
    if row is None or owner is None:  # a resource no person can be named for is not served
        raise missing
    await access.authorise(
        svc,
        principal(request),
        owner,
        action="health.fhir.read",
        client=client_address(request),
        details={"type": rtype, "id": rid, "interaction": "read"},
    )
    if row.withdrawn:
        raise GoneResource(f"{rtype}/{rid} was entered in error and withdrawn by its sender")
    if rtype not in VERDICT_TYPES:
        return _respond(row.body, row)
    async with svc.db.reader() as s:
        verdicts = await _judge(s, [row])
    return _respond(search.with_verdict(row.body, verdicts.get(row.id)), row)


def _read_route(rtype: str) -> None:
    async def read(request: web.Request) -> web.Response:
        return await _read(request, rtype)

    read.__name__ = f"read_{rtype.lower()}"
    routes.get(f"/fhir/{rtype}/{{id}}", access=READERS, summary=f"FHIR read: {rtype}", document=False)(read)


for _rtype in READ_TYPES:
    _read_route(_rtype)
