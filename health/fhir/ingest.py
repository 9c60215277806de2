"""Storing what hospitals push: Bundles (transaction or batch) and NDJSON loads, validated, linked and stored in bulk.

One pass per load, with no round trip per resource:

1. every resource is validated (fhir.resources R4B and our profile, ``health.fhir.profile``) and copied into the
   body we will store (nulls dropped, anything shaped like an ID number masked), collecting its references;
2. references are resolved inside the load (``fullUrl``, ``urn:uuid``, ``Type/id``) or against what the hospital
   stored before, with one select per resource type for all rows the load touches;
3. each Patient is linked to a person once (resident ID number, social-security card, or a hospital record
   number already cross-referenced), through the identity layer, which alone keeps identifiers in clear;
4. rows are written with Core bulk inserts and updates, with their links; one Provenance per patient and activity
   (create, update) names every version the load made of that patient's resources (a Provenance never names two
   patients': whoever may read it may read all it names); one audit entry and one ``health.results_changed`` event.

A transaction is all or nothing: any problem, and nothing is written (the identity layer's writes included). A
batch stores the good entries and refuses the others, with every entry that depends on a refused one.

Idempotency: a row is the hospital's (institution, resource type, ``resource.id`` or else its first identifier as
``system|value``). A re-send of the same content changes nothing; changed content is a new version; a resource
older than the stored one (``meta.versionId`` when both are numeric, else ``meta.lastUpdated``) is ignored and
answered with the stored version. The hospital's own version and time are kept in ``meta.extension`` of the body.

The body stored is the resource's validated JSON itself (which fhir.resources checked element by element), not a
``model_dump`` of its model: for valid FHIR JSON the two hold the same elements, and serialising the model costs
twice what validating it does, which would cap the ingest rate at a third of bare parsing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from federation.audit.service import Record
from federation.db import UnitOfWork, new_id, utcnow
from federation.errors import DomainError
from federation.identity import service as identity
from federation.identity.idnumber import mask_id_numbers_in_text
from federation.identity.models import IdentifierType, Person, PersonStatus
from federation.members.models import Institution
from federation.services import Services
from health.fhir import profile, validation
from health.fhir.outcome import issue
from health.models import ResourceLink, StoredResource

log = logging.getLogger(__name__)

RESULTS_CHANGED = "health.results_changed"
CHINA = profile.CHINA
IMAGING_SYSTEM = "urn:twincity:imaging"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
SOURCE_VERSION_URL = "https://twincity.example/fhir/StructureDefinition/source-version-id"
SOURCE_UPDATED_URL = "https://twincity.example/fhir/StructureDefinition/source-last-updated"
LAB_CODES = frozenset({"laboratory", "LAB"})
IMAGING_CODES = frozenset({"imaging", "RAD"})
YIELD_EVERY = 100  # resources validated here between turns of the event loop, while workers validate theirs
SELECT_CHUNK = 2000  # source ids per select (PostgreSQL takes at most 32,767 parameters)
MAX_SOURCE_ID = 128
# which references become fhir_links rows: (resource type, top-level element) -> rel
LINKED = {
    ("DiagnosticReport", "result"): "result",
    ("DiagnosticReport", "specimen"): "specimen",
    ("DiagnosticReport", "imagingStudy"): "imagingStudy",
    ("Observation", "specimen"): "specimen",
    ("Observation", "hasMember"): "hasMember",
}
_REF = re.compile(
    r"^(?:(?P<base>https?://\S+?)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/\S+)?$"
)


class IngestRefused(DomainError):
    """The load as a whole cannot be taken (not JSON, not a Bundle, a transaction with a bad entry); ``issues``
    are the OperationOutcome's, each naming where."""

    code = "fhir.ingest_refused"
    status = 400
    title = "The load was refused"

    def __init__(self, detail: str, issues: list[dict[str, Any]] | None = None, expression: str | None = None):
        super().__init__(detail)
        self.issues = issues or [issue("structure", detail, expression=[expression] if expression else [])]


class IngestUnprocessable(IngestRefused):
    """Well-formed FHIR that breaks a rule (our profile, a reference to nothing, a patient we cannot link)."""

    status = 422


class UnknownHospital(DomainError):
    code = "fhir.not_a_hospital"
    status = 403
    title = "Not a member hospital"


@dataclasses.dataclass
class Item:
    """One resource of a load: where it was (``prefix`` names it in expressions), what it is, what became of it."""

    index: int
    prefix: str
    resource: Any
    full_url: str | None = None
    method: str | None = None
    rtype: str | None = None
    source_id: str | None = None
    body: dict[str, Any] | None = None
    refs: list[tuple[str, str, dict[str, Any], Any]] = dataclasses.field(default_factory=list)
    links: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (rel, our target id) for fhir_links
    issues: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # the outcome
    outcome: str = "error"  # created | updated | unchanged | stale | error
    id: str | None = None
    version: int | None = None
    person_id: str | None = None

    def refuse(self, path: str, message: str, code: str = "invalid") -> None:
        self.issues.append(issue(code, message, expression=[profile.expression(self.prefix, path)]))

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def location(self) -> str | None:
        return f"{self.rtype}/{self.id}/_history/{self.version}" if self.id else None


@dataclasses.dataclass
class IngestResult:
    kind: str  # transaction | batch | import
    items: list[Item]
    person_ids: list[str]
    stored: bool  # whether anything was committed

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.items)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per resource type, how many entries had each outcome."""
        out: dict[str, dict[str, int]] = {}
        for i in self.items:
            per = out.setdefault(i.rtype or "unknown", {})
            per[i.outcome] = per.get(i.outcome, 0) + 1
        return out

    def issues(self) -> list[dict[str, Any]]:
        return [x for i in self.items for x in i.issues]


# --------------------------------------------------------------------------------------------------- entry points


def bundle_items(bundle: Any) -> tuple[str, list[Item]]:
    """The Bundle's type and its entries as items; refuses what is not a transaction or batch Bundle."""
    if not isinstance(bundle, dict):
        raise IngestRefused("send a FHIR Bundle (a JSON object)", expression="Bundle")
    if bundle.get("resourceType") != "Bundle":
        raise IngestRefused(
            f"send a Bundle, not {mask_id_numbers_in_text(str(bundle.get('resourceType'))[:40])!r}",
            expression="Bundle.resourceType",
        )
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise IngestRefused("the Bundle's type must be transaction or batch", expression="Bundle.type")
    unknown = sorted(
        set(bundle)
        - {
            "resourceType",
            "id",
            "meta",
            "implicitRules",
            "language",
            "identifier",
            "type",
            "timestamp",
            "total",
            "link",
            "entry",
            "signature",
        }
    )
    if unknown:
        raise IngestRefused(f"unknown element {unknown[0]!r} in the Bundle", expression=f"Bundle.{unknown[0]}")
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise IngestRefused("Bundle.entry must be a list", expression="Bundle.entry")
    items = []
    for n, e in enumerate(entries):
        prefix = f"Bundle.entry[{n}]"
        item = Item(index=n, prefix=f"{prefix}.resource", resource=None)
        items.append(item)
        if not isinstance(e, dict):
            item.issues.append(issue("structure", "an entry must be a JSON object", expression=[prefix]))
            continue
        item.resource = e.get("resource")
        for key in set(e) - {"fullUrl", "resource", "request", "id", "extension", "link", "search", "response"}:
            item.issues.append(issue("structure", "unknown element in the entry", expression=[f"{prefix}.{key}"]))
        full_url = e.get("fullUrl")
        if full_url is not None and not isinstance(full_url, str):
            item.issues.append(issue("structure", "fullUrl must be a string", expression=[f"{prefix}.fullUrl"]))
        item.full_url = full_url if isinstance(full_url, str) else None
        request = e.get("request")
        if isinstance(request, dict):
            method = request.get("method")
            if method not in ("POST", "PUT"):
                item.issues.append(
                    issue(
                        "not-supported",
                        "only POST and PUT entries are taken (results are withdrawn with status entered-in-error)",
                        expression=[f"{prefix}.request.method"],
                    )
                )
            item.method = method if isinstance(method, str) else None
        elif request is not None:
            item.issues.append(issue("structure", "request must be an object", expression=[f"{prefix}.request"]))
        if item.resource is None:
            item.issues.append(issue("required", "the entry has no resource", expression=[f"{prefix}.resource"]))
    return kind, items


async def ingest_bundle(svc: Services, bundle: Any, *, institution: str, actor: str) -> IngestResult:
    """Store a transaction or batch Bundle from ``institution`` (a hospital's member code).

    A transaction with any problem raises ``IngestRefused`` carrying every issue (``issues``); nothing is stored.
    A batch returns each entry's outcome; only the good entries (and none depending on a bad one) are stored.
    """
    kind, items = bundle_items(bundle)
    return await ingest_items(svc, items, institution=institution, actor=actor, atomic=kind == "transaction", kind=kind)


async def ingest_items(
    svc: Services, items: list[Item], *, institution: str, actor: str, atomic: bool, kind: str
) -> IngestResult:
    """Validate, link and store these items in one transaction (see the module docstring)."""
    now = utcnow()
    await _prepare_all(svc, [item for item in items if item.resource is not None], now)
    _duplicates(items)
    if atomic and not all(i.ok for i in items):
        raise _refusal(items)
    async with svc.db.uow() as uow:
        hospital = await _hospital(uow.session, institution)
        loader = _Load(svc, uow, hospital, items, now)
        await loader.run(atomic)
        if atomic and not all(i.ok for i in items):
            raise _refusal(items)  # leaving the unit of work rolls the identity layer's writes back
        stored = [i for i in items if i.ok]
        changed = [i for i in stored if i.outcome in ("created", "updated")]
        person_ids = sorted({i.person_id for i in stored if i.person_id} | loader.linked)
        if changed:
            await loader.write(changed)
        if stored or loader.linked:
            result = IngestResult(kind, items, person_ids, stored=True)
            await svc.audit(
                uow,
                Record(
                    action="health.ingest",
                    actor=actor,
                    actor_institution=hospital.code,
                    details={"kind": kind, "counts": result.counts(), "person_ids": person_ids},
                ),
            )
            if changed:
                uow.emit(RESULTS_CHANGED, person_ids=sorted({i.person_id for i in changed if i.person_id}))
            await uow.commit()
            return result
    return IngestResult(kind, items, [], stored=False)


def _refusal(items: Sequence[Item]) -> IngestRefused:
    issues = [x for i in items for x in i.issues]
    cls = IngestRefused if any(x["code"] == "structure" for x in issues) else IngestUnprocessable
    return cls(f"{len(issues)} problem(s); the transaction stored nothing", issues=issues)


# ------------------------------------------------------------------------------------------------ per-resource work


async def _prepare_all(svc: Services, items: list[Item], now: dt.datetime) -> None:
    """Validate every item's resource and prepare the valid ones (``_prepare``). A big load is validated partly
    by worker processes (``health.fhir.validation``): this process validates and prepares its own part meanwhile."""
    here, theirs = validation.validator(svc).split([item.resource for item in items], now)
    for n, item in enumerate(items[:here], 1):
        _prepare(item, svc, profile.check(item.resource, now=now)[1])
        if theirs is not None and n % YIELD_EVERY == 0:
            await asyncio.sleep(0)  # what did not fit in the workers' pipes goes on to them; other requests run
    if theirs is not None:
        for item, problems in zip(items[here:], await theirs, strict=True):
            _prepare(item, svc, problems)


def _prepare(item: Item, svc: Services, problems: list[profile.Problem]) -> None:
    """Refuse the resource for its validation ``problems``, or copy it into the body we store, collecting its
    references."""
    r = item.resource
    rtype = r.get("resourceType") if isinstance(r, dict) else None
    item.rtype = rtype if isinstance(rtype, str) and rtype in profile.MODELS else None
    for p in problems:
        item.refuse(p.path, p.message, p.code)
    if not item.ok:
        return
    sent, by_identifier = _source_id(r)
    item.source_id = source_key(svc, sent, identifier=by_identifier)
    if item.source_id is None:
        item.refuse("id", "the resource has neither an id nor an identifier: a re-send could not be recognised")
        return
    if len(item.source_id) > MAX_SOURCE_ID:
        item.refuse("id", f"the resource's id or first identifier is longer than {MAX_SOURCE_ID} characters")
        return
    refs: list[tuple[str, str, dict[str, Any], Any]] = []
    item.body = _copy(r, None, refs)
    item.refs = refs


def source_key(svc: Services, source_id: str | None, *, identifier: bool = False) -> str | None:
    """The ``source_id`` column for a hospital's id: as sent, unless it holds an ID number (a Patient id may be
    one), which is never stored in clear: then a keyed blind index of it. An identifier (``system|value``, for a
    resource sent without an id) is always blind-indexed: it may be a social-security card, a record number or a
    phone number, and the column is neither encrypted nor masked. The index is deterministic, so a re-send
    finds its row."""
    if source_id is None or (not identifier and mask_id_numbers_in_text(source_id) == source_id):
        return source_id
    return "bi:" + svc.cipher.blind_index(source_id, "fhir:source-id")


def _source_id(r: dict[str, Any]) -> tuple[str | None, bool]:
    """The hospital's key for the resource: its ``id``, else its first identifier as ``system|value``; and
    whether it is the identifier."""
    if isinstance(r.get("id"), str) and r["id"]:
        return r["id"], False
    for ident in r.get("identifier") or ():
        if isinstance(ident, dict) and ident.get("value"):
            return f"{ident.get('system') or ''}|{ident['value']}", True
    return None, False


def _copy(node: Any, path: Any, refs: list[tuple[str, str, dict[str, Any], Any]]) -> Any:
    """The stored copy of a JSON value: nulls dropped, ID numbers masked in every string, and each Reference
    recorded as (top-level element, path, the copy's dict, the reference string) for rewriting.

    This walk runs over every element of every resource, so it must cost little beside validation: strings (most
    leaves) are tested first by exact type, only one of 15 characters or more can hold an ID number, and the path
    is a chain of (parent, key) pairs spelled out only for a reference."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if v is None:
                continue
            if type(v) is str:
                out[k] = mask_id_numbers_in_text(v) if len(v) >= 15 else v
            elif isinstance(v, (dict, list)):
                out[k] = copied = _copy(v, (path, k), refs)
                if k == "identifier" and isinstance(v, dict):  # a Reference's: see _mask_identifier
                    _mask_identifier(copied)
            elif isinstance(v, str):
                out[k] = _masked(v)
            else:
                out[k] = v
        if path is not None:
            ref = node.get("reference")
            if isinstance(ref, str):
                parts = _parts(path)
                refs.append((str(parts[0]), _spelled(parts), out, ref))
        return out
    if isinstance(node, list):
        return [_copy(v, (path, n), refs) for n, v in enumerate(node) if v is not None]
    if isinstance(node, str):
        return _masked(node)
    return node


def _masked(text: str) -> str:
    return mask_id_numbers_in_text(text) if len(text) >= 15 else text


def _mask_identifier(ident: dict[str, Any]) -> None:
    """A single ``identifier`` is a Reference's (a logical reference: in the resources we take, every other
    identifier element is a list). Hospitals put the patient's card or record number there, which would be
    stored and served in clear: its value is masked like a stored Patient's identifiers."""
    value = ident.get("value")
    if isinstance(value, str):
        kind = IdentifierType.ID_NUMBER if ident.get("system") == profile.ID_NUMBER_SYSTEM else "other"
        ident["value"] = identity.mask(kind, value)


def _parts(path: Any) -> list[Any]:
    parts = []
    while path is not None:
        path, part = path
        parts.append(part)
    parts.reverse()
    return parts


def _spelled(parts: list[Any]) -> str:
    """``subject``, ``result[1]``, ``component[0].valueQuantity``: the path as expressions write it."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _duplicates(items: Sequence[Item]) -> None:
    seen: dict[tuple[str, str], int] = {}
    for item in items:
        if not item.ok or item.rtype is None or item.source_id is None:
            continue
        key = (item.rtype, item.source_id)
        if key in seen:
            item.refuse("id", f"the same resource as entry {seen[key]}, twice in one load", "duplicate")
        else:
            seen[key] = item.index


@dataclasses.dataclass(frozen=True)
class Hospital:
    """What a load needs of the member pushing it."""

    id: str
    code: str
    name: str
    mrn_systems: frozenset[str]  # its own record-number systems (``attributes.mrn_systems``), besides type MR


async def _hospital(session: AsyncSession, code: str | None) -> Hospital:
    row = None
    if code:
        q = select(
            Institution.id,
            Institution.code,
            Institution.name,
            Institution.kind,
            Institution.active,
            Institution.attributes,
        ).where(Institution.code == code.upper())
        row = (await session.execute(q)).first()
    if row is None or row.kind != "hospital" or not row.active:
        raise UnknownHospital("results are pushed by a member hospital's API key")
    systems = (row.attributes or {}).get("mrn_systems") or ()
    return Hospital(row.id, row.code, row.name, frozenset(str(x) for x in systems if isinstance(x, str)))


def _date(value: Any) -> dt.datetime | None:
    """A FHIR date/dateTime/instant as an aware UTC datetime; a date alone is that day's start in China time.
    None for anything else, including a moment with no UTC equivalent (the profile refuses those on the way in;
    a body stored before may still hold one)."""
    return profile.to_utc(value)


def _code(concept: Any) -> tuple[str | None, str | None]:
    codings = [c for c in (concept or {}).get("coding") or () if isinstance(c, dict) and c.get("code")]
    if not codings:
        return None, None
    best = next((c for c in codings if c.get("system") == profile.LOINC), codings[0])
    return best.get("system"), str(best["code"])


def _category(rtype: str, body: dict[str, Any]) -> str | None:
    if rtype == "ImagingStudy":
        return "imaging"
    codes = [c.get("code") for cat in body.get("category") or () for c in (cat.get("coding") or ()) if c.get("code")]
    if any(c in LAB_CODES for c in codes):
        return "laboratory"
    if any(c in IMAGING_CODES for c in codes):
        return "imaging"
    return str(codes[0])[:20] if codes else None


def _imaging_code(body: dict[str, Any]) -> str | None:
    series = body.get("series") or ()
    if not series:
        modality = next(iter(body.get("modality") or ()), None)
        return f"{modality['code']}|" if modality and modality.get("code") else None
    first = series[0]
    site = (first.get("bodySite") or {}).get("code") or ""
    return f"{first['modality']['code']}|{site}"


def _effective(rtype: str, body: dict[str, Any]) -> dt.datetime | None:
    if rtype == "ImagingStudy":
        return _date(body.get("started"))
    if "effectiveDateTime" in body:
        return _date(body["effectiveDateTime"])
    if "effectivePeriod" in body:
        return _date(body["effectivePeriod"].get("start"))
    return _date(body.get("effectiveInstant"))


def _source_meta(body: dict[str, Any]) -> tuple[str | None, str | None]:
    meta = body.get("meta") or {}
    return meta.get("versionId"), meta.get("lastUpdated")


def _stored_source_meta(body: dict[str, Any]) -> tuple[str | None, str | None]:
    ext = {e.get("url"): e for e in (body.get("meta") or {}).get("extension") or () if isinstance(e, dict)}
    version = ext.get(SOURCE_VERSION_URL, {}).get("valueString")
    updated = ext.get(SOURCE_UPDATED_URL, {}).get("valueInstant")
    return version, updated


def _older(incoming: tuple[str | None, str | None], stored: tuple[str | None, str | None]) -> bool:
    """Whether the incoming resource is older than the stored one, by the hospital's own version or time."""
    (v_in, t_in), (v_st, t_st) = incoming, stored
    if _number(v_in) is not None and _number(v_st) is not None:
        return _number(v_in) < _number(v_st)  # type: ignore[operator]
    # whatever a stored body holds (a date past the calendar's ends, not a string): not comparable, so not older
    a, b = _date(t_in), _date(t_st)
    return a is not None and b is not None and a < b


def _number(version: Any) -> int | None:
    """A version id made of ASCII digits as a number (``str.isdigit`` also takes ``²``, which ``int`` does not)."""
    return int(version) if isinstance(version, str) and version.isascii() and version.isdigit() else None


def _without_meta(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "meta"}


ADDRESS_KEPT = ("city", "district", "state", "country")


def _mask_patient(body: dict[str, Any]) -> None:
    """A stored Patient shows its identifiers masked and no contact data: no phone or e-mail (``telecom``), and
    of an address only the city, district, province and country (what results are counted by); the identity
    layer holds contact data, encrypted. The narrative (``text``) would repeat all of it in clear, and the
    contact persons (``contact``: relatives' names, phones, addresses) are not the patient's results: both go."""
    for ident in body.get("identifier") or ():
        _mask_identifier(ident)
    for element in ("telecom", "text", "contact"):
        body.pop(element, None)
    addresses = [{k: a[k] for k in ADDRESS_KEPT if k in a} for a in body.pop("address", None) or ()]
    if any(addresses):
        body["address"] = [a for a in addresses if a]


def _name(body: dict[str, Any]) -> str:
    for n in body.get("name") or ():
        if n.get("text"):
            return str(n["text"]).strip()
        family, given = n.get("family") or "", "".join(n.get("given") or ())
        if family or given:
            joined = family + given
            # a name in Latin letters is written given first, with spaces
            return joined if not joined.isascii() else " ".join([*n.get("given", ()), family]).strip()
    return ""


class _Load:
    """The database side of one load: the select, the links to persons, the writes."""

    def __init__(self, svc: Services, uow: UnitOfWork, hospital: Hospital, items: list[Item], now: dt.datetime):
        self.svc, self.uow, self.hospital, self.items, self.now = svc, uow, hospital, items, now
        self.session = uow.session
        self.atomic = False
        self.existing: dict[tuple[str, str], Any] = {}
        self.linked: set[str] = set()
        self.mrn_systems = hospital.mrn_systems
        self.source = f"urn:twincity:member:{hospital.code}"

    # -- resolution -------------------------------------------------------------------------------------------

    def _index(self) -> dict[str, Item]:
        index: dict[str, Item] = {}
        for item in self.items:
            if item.rtype is None or item.body is None:
                continue
            if item.full_url:
                index[item.full_url] = item
            rid = item.resource.get("id")
            if isinstance(rid, str):
                index[f"{item.rtype}/{rid}"] = item
        return index

    async def _select(self, keys: set[tuple[str, str]]) -> None:
        """Every stored row the load touches, by the unique key: one select per resource type (in chunks for
        very large loads), ``source_id IN (...)`` under the institution and the type, which both engines answer
        with one walk of the unique index (a list of (type, id) pairs cost PostgreSQL a plan of OR-ed pairs)."""
        by_type: dict[str, list[str]] = {}
        for rtype, source_id in keys:
            by_type.setdefault(rtype, []).append(source_id)
        for rtype, source_ids in sorted(by_type.items()):
            source_ids.sort()
            for start in range(0, len(source_ids), SELECT_CHUNK):
                rows = await self.session.execute(
                    select(
                        StoredResource.id,
                        StoredResource.resource_type,
                        StoredResource.source_id,
                        StoredResource.version,
                        StoredResource.person_id,
                        StoredResource.body,
                    ).where(
                        StoredResource.institution_id == self.hospital.id,
                        StoredResource.resource_type == rtype,
                        StoredResource.source_id.in_(source_ids[start : start + SELECT_CHUNK]),
                    )
                )
                for row in rows:
                    self.existing[(row.resource_type, row.source_id)] = row

    async def run(self, atomic: bool) -> None:
        self.atomic = atomic
        index = self._index()
        wanted: set[tuple[str, str]] = set()
        targets: dict[int, list[Any]] = {}
        for item in self.items:
            if not item.ok or item.body is None:
                continue
            wanted.add((item.rtype, item.source_id))  # type: ignore[arg-type]
            resolved = []
            for _element, path, node, ref in item.refs:
                target = self._resolve(item, path, node, ref, index)
                resolved.append(target)
                if isinstance(target, tuple):
                    wanted.add(target)
            targets[item.index] = resolved
        await self._select(wanted)
        # references to rows stored before: they must exist
        for item in self.items:
            for (_element, path, _node, _ref), target in zip(item.refs, targets.get(item.index, ()), strict=False):
                if isinstance(target, tuple) and target not in self.existing:
                    item.refuse(path + ".reference", f"{target[0]}/{target[1]} is neither in this load nor stored")
        self._cascade()
        if atomic and not all(i.ok for i in self.items):
            return
        await self._link_patients()
        self._cascade()
        if atomic and not all(i.ok for i in self.items):
            return
        self._finish(targets)

    def _resolve(self, item: Item, path: str, node: dict[str, Any], ref: str, index: dict[str, Item]) -> Any:
        """An Item of this load, a (type, source id) key of a stored row, None (kept as sent: contained, or a
        type we do not store), or False after refusing the reference."""
        if ref.startswith("#"):
            return None
        if ref in index:
            return index[ref]
        m = _REF.match(ref)
        if m is None:
            item.refuse(f"{path}.reference", "a reference to nothing in this load", "not-found")
            return False
        key = f"{m['type']}/{m['id']}"
        if key in index and (m["base"] is None or ref in index):
            return index[key]
        if m["type"] not in profile.MODELS:
            node.pop("reference", None)  # a type we do not store (Encounter, Device, ...): keep its display only
            if not node:
                node["display"] = m["type"]
            return None
        return (m["type"], source_key(self.svc, m["id"]))

    def _cascade(self) -> None:
        """An entry referring to a refused entry is refused too (until nothing changes)."""
        changed = True
        while changed:
            changed = False
            for item in self.items:
                if not item.ok or item.body is None:
                    continue
                for _, path, _, ref in item.refs:
                    target = self._target_item(ref)
                    if target is not None and target is not item and not target.ok:
                        item.refuse(
                            path + ".reference", f"refers to entry {target.index}, which was refused", "processing"
                        )
                        changed = True
                        break

    def _target_item(self, ref: str) -> Item | None:
        if not hasattr(self, "_idx"):
            self._idx = self._index()
        if ref in self._idx:
            return self._idx[ref]
        m = _REF.match(ref)
        return self._idx.get(f"{m['type']}/{m['id']}") if m else None

    # -- persons ----------------------------------------------------------------------------------------------

    async def _link_patients(self) -> None:
        """Link every Patient of the load. Patients whose identifiers are all known, to one person, are linked
        from one query for the whole load; the others go through the identity layer one by one."""
        patients = [(item, self._identifiers(item)) for item in self.items if item.ok and item.rtype == "Patient"]
        known: list[tuple[Item, dict[str, tuple[int, identity.IdentifierInput]]]] = []
        for item, idents in patients:
            try:
                for _, inp in idents.values():
                    identity.normalise_value(inp.type, inp.value)
            except DomainError:
                await self._link(item, idents)  # says what is wrong with it
                if self.atomic:
                    return  # the transaction is refused: link nothing more
                continue
            known.append((item, idents))
        flat = [inp for _, idents in known for _, inp in idents.values()]
        found = iter(await identity.find_identifiers(self.session, self.svc.cipher, flat) if flat else ())
        owners = [(item, idents, [next(found) for _ in idents]) for item, idents in known]
        ids = {i.person_id for *_, hits in owners for i in hits if i is not None}
        active = set()
        if ids:
            q = select(Person.id).where(Person.id.in_(sorted(ids)), Person.status == PersonStatus.ACTIVE.value)
            active = set((await self.session.execute(q)).scalars())
        for item, idents, hits in owners:
            people = {i.person_id for i in hits if i is not None}
            if hits and all(i is not None for i in hits) and len(people) == 1 and people <= active:
                item.person_id = people.pop()
                self.linked.add(item.person_id)
            else:
                await self._link(item, idents)
                if self.atomic and not item.ok:
                    return

    def _identifiers(self, item: Item) -> dict[str, tuple[int, identity.IdentifierInput]]:
        """The identifiers that link a Patient: resident ID number, social-security card, hospital record
        number (by position in ``identifier``), with their values as sent (the body's copy is masked)."""
        out: dict[str, tuple[int, identity.IdentifierInput]] = {}
        code = self.hospital.code
        for k, ident in enumerate(item.resource.get("identifier") or ()):
            system, value = ident.get("system"), ident.get("value")
            if not isinstance(value, str) or not value.strip():
                continue
            types = {c.get("code") for c in (ident.get("type") or {}).get("coding") or ()}
            if system == profile.ID_NUMBER_SYSTEM:
                out["id"] = (k, identity.IdentifierInput(IdentifierType.ID_NUMBER, value))
            elif system == profile.SOCIAL_SECURITY_CARD_SYSTEM:
                out["ssc"] = (k, identity.IdentifierInput(IdentifierType.SOCIAL_SECURITY_CARD, value))
            elif "MR" in types or system in self.mrn_systems:
                out["mrn"] = (k, identity.IdentifierInput(IdentifierType.LOCAL, value, code, "hospital_record"))
        return out

    async def _link(self, item: Item, idents: dict[str, tuple[int, identity.IdentifierInput]]) -> None:
        """Find (or, by resident ID number, register) the patient's person, cross-referencing the hospital's
        record number; under a savepoint, so a refusal leaves nothing of it behind."""
        current = "id"
        try:
            # in a batch a refused patient must leave nothing behind; a transaction refused rolls back whole
            async with contextlib.nullcontext() if self.atomic else self.session.begin_nested():
                person = None
                if "id" in idents:
                    reg = await identity.register(
                        self.uow,
                        self.svc,
                        identity.RegisterPerson(
                            name=_name(item.body or {}),
                            identifiers=[inp for _, inp in idents.values()],
                            home_institution=self.hospital.code,
                        ),
                        actor=self.source,
                    )
                    person = reg.person
                else:
                    for current in ("ssc", "mrn"):
                        if current not in idents:
                            continue
                        found = await identity.find_identifier(self.session, self.svc.cipher, idents[current][1])
                        if found is not None:
                            person = await identity.get_person(self.session, found.person_id)
                            break
                    if person is None:
                        item.refuse(
                            "identifier",
                            "cannot link this patient to a person: send the resident ID number "
                            f"({profile.ID_NUMBER_SYSTEM}), a social-security card number known to the federation "
                            f"({profile.SOCIAL_SECURITY_CARD_SYSTEM}), or a hospital record number already "
                            "cross-referenced",
                            "not-found",
                        )
                        return
                    if "mrn" in idents and current != "mrn":
                        current = "mrn"
                        mrn = idents["mrn"][1]
                        known = await identity.find_identifier(self.session, self.svc.cipher, mrn)
                        if known is None:
                            await identity.add_identifier(self.uow, self.svc, person.id, mrn, actor=self.source)
                        elif (await identity.get_person(self.session, known.person_id)).id != person.id:
                            raise identity.IdentifierTaken("this record number belongs to another person")
        except DomainError as e:
            k = idents.get(current) or next(iter(idents.values()), None)
            path = f"identifier[{k[0]}].value" if k else "identifier"
            item.refuse(path, mask_id_numbers_in_text(e.detail), "invalid" if e.status < 409 else "conflict")
            return
        item.person_id = person.id
        self.linked.add(person.id)

    # -- rows -------------------------------------------------------------------------------------------------

    def _person_of(self, target: Any) -> str | None:
        if isinstance(target, Item):
            return target.person_id
        row = self.existing.get(target) if isinstance(target, tuple) else None
        return row.person_id if row is not None else None

    def _finish(self, targets: dict[int, list[Any]]) -> None:
        """Ids, rewritten references, columns and outcomes for every good item (no database access)."""
        for item in self.items:
            if item.ok:
                row = self.existing.get((item.rtype, item.source_id))  # type: ignore[arg-type]
                item.id = row.id if row is not None else new_id()
        for item in self.items:
            if not item.ok or item.body is None:
                continue
            body = item.body
            for (element, path, node, _ref), target in zip(item.refs, targets[item.index], strict=True):
                ttype = target.rtype if isinstance(target, Item) else target[0] if isinstance(target, tuple) else None
                if ttype is None:
                    continue
                if ttype == "Patient":
                    person = self._person_of(target)
                    if person is None:
                        item.refuse(
                            f"{path}.reference", "the patient referred to is not linked to a person", "not-found"
                        )
                        break
                    node["reference"] = f"Patient/{person}"
                    if element in ("subject", "patient") and path == element:
                        item.person_id = person
                else:
                    tid = target.id if isinstance(target, Item) else self.existing[target].id
                    node["reference"] = f"{ttype}/{tid}"
                    rel = LINKED.get((item.rtype, element))  # type: ignore[arg-type]
                    if rel:
                        item.links.append((rel, tid))
            if not item.ok:
                continue
            if item.rtype in profile.WITH_SUBJECT and not str(body["subject"].get("reference", "")).startswith(
                "Patient/"
            ):
                item.refuse("subject.reference", "the subject must be a Patient", "invalid")
                continue
            if item.rtype == "Patient":
                _mask_patient(body)
            self._outcome(item)

    def _outcome(self, item: Item) -> None:
        body = item.body or {}
        row = self.existing.get((item.rtype, item.source_id))  # type: ignore[arg-type]
        incoming_meta = _source_meta(body)
        meta = {k: v for k, v in (body.get("meta") or {}).items() if k in ("profile", "security", "tag")}
        ext = []
        if incoming_meta[0]:
            ext.append({"url": SOURCE_VERSION_URL, "valueString": str(incoming_meta[0])})
        if incoming_meta[1]:
            ext.append({"url": SOURCE_UPDATED_URL, "valueInstant": str(incoming_meta[1])})
        body["id"] = item.id
        if row is not None:
            if _older(incoming_meta, _stored_source_meta(row.body)):
                item.outcome, item.version, item.person_id = "stale", row.version, row.person_id
                return
            if _without_meta(body) == _without_meta(row.body):
                item.outcome, item.version = "unchanged", row.version
                return
            item.outcome, item.version = "updated", row.version + 1
        else:
            item.outcome, item.version = "created", 1
        meta.update(versionId=str(item.version), lastUpdated=self.now.isoformat(), source=self.source)
        if ext:
            meta["extension"] = ext
        body["meta"] = meta

    async def write(self, changed: list[Item]) -> None:
        """Bulk inserts and updates of the changed rows, their links, and the Provenances (see the module)."""
        inserts, updates, links = [], [], []
        groups: dict[tuple[str | None, str], list[Item]] = {}
        for item in changed:
            body = item.body or {}
            rtype = item.rtype or ""
            if rtype == "ImagingStudy":
                system, code = IMAGING_SYSTEM, _imaging_code(body)
            else:
                system, code = _code(body.get("code"))
            status = body.get("status")
            values = {
                "id": item.id,
                "resource_type": rtype,
                "institution_id": self.hospital.id,
                "source_id": item.source_id,
                "version": item.version,
                "last_updated": self.now,
                "status": status,
                "person_id": item.person_id,
                "category": _category(rtype, body)
                if rtype in ("Observation", "DiagnosticReport", "ImagingStudy")
                else None,
                "code_system": system[:200] if system else None,
                "code": code[:64] if code else None,
                "effective_at": _effective(rtype, body),
                "issued_at": _date(body.get("issued")),
                "withdrawn": status == "entered-in-error",
                "body": body,
            }
            (inserts if item.outcome == "created" else updates).append(values)
            links.extend({"source_id": item.id, "rel": rel, "target_id": tid} for rel, tid in item.links)
            activity = "CREATE" if item.outcome == "created" else "UPDATE"
            groups.setdefault((item.person_id, activity), []).append(item)
        provenances = [self._provenance(person, activity, items) for (person, activity), items in groups.items()]
        for provenance, items in zip(provenances, groups.values(), strict=True):
            links.extend({"source_id": provenance["id"], "rel": "target", "target_id": i.id} for i in items)
        if updates:
            ids = [u["id"] for u in updates]
            for start in range(0, len(ids), SELECT_CHUNK):
                await self.session.execute(
                    delete(ResourceLink).where(ResourceLink.source_id.in_(ids[start : start + SELECT_CHUNK]))
                )
            await self.session.execute(update(StoredResource), updates)
        rows = inserts + provenances
        if rows:
            await self.session.execute(insert(StoredResource.__table__), rows)
        unique = {(x["source_id"], x["rel"], x["target_id"]): x for x in links}
        if unique:
            await self.session.execute(insert(ResourceLink.__table__), list(unique.values()))

    def _provenance(self, person_id: str | None, activity: str, items: list[Item]) -> dict[str, Any]:
        """A Provenance naming the versions this load made (``activity``) of one patient's resources (or of those
        that belong to no patient: organisations, practitioners)."""
        pid = new_id()
        body = {
            "resourceType": "Provenance",
            "id": pid,
            "meta": {"versionId": "1", "lastUpdated": self.now.isoformat(), "source": self.source},
            "target": [{"reference": f"{i.rtype}/{i.id}/_history/{i.version}"} for i in items],
            "recorded": self.now.isoformat(),
            "activity": {"coding": [{"system": DATA_OPERATION, "code": activity}]},
            "agent": [{"who": {"type": "Organization", "display": self.hospital.name}}],
        }
        return {
            "id": pid,
            "resource_type": "Provenance",
            "institution_id": self.hospital.id,
            "source_id": f"prov:{pid}",
            "version": 1,
            "last_updated": self.now,
            "status": None,
            "person_id": person_id,
            "category": None,
            "code_system": None,
            "code": None,
            "effective_at": None,
            "issued_at": self.now,
            "withdrawn": False,
            "body": body,
        }


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(raw: bytes | str) -> Any:
    """JSON as FHIR allows it: no NaN or Infinity; nesting too deep for Python is refused as malformed.

    orjson reads strict UTF-8 JSON (it refuses NaN and Infinity itself) four times faster than the standard
    library; whatever it refuses is read again by the standard library, which accepts what JSON allows and
    orjson does not (other Unicode encodings, a byte-order mark, lone surrogates, integers beyond 64 bits) and
    words the error for what neither takes."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def ndjson_items(lines: Iterable[tuple[int, bytes]]) -> list[Item]:
    """NDJSON lines (number, bytes) as items; a line that is not JSON is an item with its issue."""
    items = []
    for number, line in lines:
        item = Item(index=number, prefix="Resource", resource=None)
        try:
            item.resource = loads(line)
            rtype = item.resource.get("resourceType") if isinstance(item.resource, dict) else None
            if isinstance(rtype, str) and rtype.isalpha():
                item.prefix = rtype[:40]
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError among them
            item.issues.append(
                issue(
                    "structure", f"not JSON: {e.__class__.__name__} at {getattr(e, 'pos', 0)}", expression=[item.prefix]
                )
            )
        items.append(item)
    return items
