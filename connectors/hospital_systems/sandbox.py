"""A hospital's FHIR R4 server as a sandbox: searchset Bundles paged by ``next`` links, ``_lastUpdated`` filters,
seeded with demo residents' Patients (ID numbers under ``urn:oid:2.16.156.10011.1.3``) and a few hundred results.

Beyond the shared fault switches (``connectors.framework.sandbox``): ``out_of_order`` reverses each page's
entries, ``duplicates`` sends every entry twice and starts each next page one entry early (the same resource on
two pages). ``POST /_sandbox/resources`` stores a new version of a resource (its ``meta.lastUpdated`` becomes now),
``GET /_sandbox/resources`` counts what the server holds per type.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import random
from typing import Any

from aiohttp import web
from yarl import URL

from connectors.framework.sandbox import FAULTS, faults_of, make_app, shape_feed, started
from federation.demo import RESIDENTS
from health.demo import IMAGING, LAB

TOKEN = "sandbox-token"
ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
LOINC = "http://loinc.org"
CHINA = dt.timezone(dt.timedelta(hours=8))
TYPES = ("Patient", "Observation", "DiagnosticReport", "ImagingStudy")
EPOCH = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
MAX_COUNT = 1000
FHIR_JSON = "application/fhir+json"


@dataclasses.dataclass
class Stored:
    resource: dict[str, Any]
    updated: dt.datetime

    @property
    def key(self) -> tuple[dt.datetime, str]:
        return self.updated, str(self.resource["id"])


@dataclasses.dataclass
class State:
    resources: dict[str, dict[str, Stored]]  # type -> id -> stored

    def put(self, resource: dict[str, Any], when: dt.datetime) -> Stored:
        rtype, rid = resource["resourceType"], resource["id"]
        old = self.resources.setdefault(rtype, {}).get(rid)
        version = int(old.resource["meta"]["versionId"]) + 1 if old else 1
        when = when.replace(microsecond=when.microsecond // 1000 * 1000)  # compared at the precision it is shown
        body = dict(resource)
        body["meta"] = {"versionId": str(version), "lastUpdated": instant(when)}
        stored = Stored(body, when)
        self.resources[rtype][rid] = stored
        return stored


STATE = web.AppKey("hospital_sandbox_state", State)


def instant(when: dt.datetime) -> str:
    """A FHIR instant as this hospital writes it: China time, milliseconds."""
    return when.astimezone(CHINA).isoformat(timespec="milliseconds")


def _when(rng: random.Random, days_ago: int, hour: int) -> str:
    day = EPOCH.astimezone(CHINA).replace(hour=hour, minute=rng.randint(0, 59), second=0, microsecond=0)
    return (day - dt.timedelta(days=days_ago)).isoformat()


def patient_id(idx: int) -> str:
    return f"his-p{idx:03d}"


def _patient(idx: int) -> dict[str, Any]:
    r = RESIDENTS[idx]
    return {
        "resourceType": "Patient",
        "id": patient_id(idx),
        "identifier": [
            {"system": ID_SYSTEM, "value": r.id_number},
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                "system": "urn:twincity:sandbox-his:mrn",
                "value": f"HIS-MRN-{idx:05d}",
            },
        ],
        "name": [{"text": r.name, "family": r.name[0], "given": [r.name[1:]]}],
        "gender": "male" if int(r.seq[-1]) % 2 else "female",
        "birthDate": f"{r.birth[:4]}-{r.birth[4:6]}-{r.birth[6:]}",
    }


def observation(n: int, idx: int, rng: random.Random) -> dict[str, Any]:
    code = sorted(LAB)[n % len(LAB)]
    display, unit, low, high = LAB[code]
    value = round(rng.uniform(low * 0.8, high * 1.2), 1)
    days_ago = rng.choice((1, 3, 10, 45, 120, 365))
    return {
        "resourceType": "Observation",
        "id": f"his-o{n:05d}",
        "status": "final",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}
        ],
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
        "subject": {"reference": f"Patient/{patient_id(idx)}"},
        "effectiveDateTime": _when(rng, days_ago, 8),
        "issued": _when(rng, days_ago, 11),
        "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
        "referenceRange": [{"low": {"value": low, "unit": unit}, "high": {"value": high, "unit": unit}}],
    }


def _imaging(n: int, idx: int, rng: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
    loinc, display, modality, site, site_display, conclusion = IMAGING[n % len(IMAGING)]
    days_ago = rng.choice((7, 25, 60, 150))
    study = {
        "resourceType": "ImagingStudy",
        "id": f"his-s{n:04d}",
        "status": "available",
        "subject": {"reference": f"Patient/{patient_id(idx)}"},
        "started": _when(rng, days_ago, 9),
        "numberOfSeries": 1,
        "numberOfInstances": 120 if modality == "CT" else 2,
        "description": display,
        "series": [
            {
                "uid": f"2.25.{rng.getrandbits(100)}",
                "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": modality},
                "bodySite": {"system": "http://snomed.info/sct", "code": site, "display": site_display},
            }
        ],
    }
    report = {
        "resourceType": "DiagnosticReport",
        "id": f"his-r{n:04d}",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
        "code": {"coding": [{"system": LOINC, "code": loinc, "display": display}]},
        "subject": {"reference": f"Patient/{patient_id(idx)}"},
        "effectiveDateTime": _when(rng, days_ago, 9),
        "issued": _when(rng, days_ago, 15),
        "imagingStudy": [{"reference": f"ImagingStudy/his-s{n:04d}"}],
        "conclusion": conclusion,
    }
    return study, report


def seed(*, patients: int = 6, observations: int = 300, studies: int = 12) -> State:
    """The hospital's data: ``patients`` demo residents, results spread among them. Several resources share one
    ``lastUpdated`` instant (a hospital system writes in bursts), so pages split runs of equal instants."""
    rng = random.Random(20261204)
    state = State({t: {} for t in TYPES})
    clock = EPOCH
    for idx in range(patients):
        state.put(_patient(idx), clock)
        clock += dt.timedelta(seconds=1)
    for n in range(observations):
        state.put(observation(n, n % patients, rng), clock)
        if n % 4 == 3:  # four at a time share an instant
            clock += dt.timedelta(seconds=1)
    for n in range(studies):
        study, report = _imaging(n, n % patients, rng)
        state.put(study, clock)
        state.put(report, clock + dt.timedelta(milliseconds=500))
        clock += dt.timedelta(seconds=1)
    return state


def _outcome(status: int, code: str, text: str) -> web.Response:
    body = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}
    return web.json_response(body, status=status, content_type=FHIR_JSON)


def _authorised(request: web.Request) -> bool:
    return request.headers.get("Authorization") == f"Bearer {TOKEN}"


def _parse_instant(value: str) -> dt.datetime | None:
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else None


def _filters(values: list[str]) -> list[tuple[str, dt.datetime]] | None:
    out = []
    for v in values:
        prefix, rest = (v[:2], v[2:]) if v[:2] in ("gt", "ge", "lt", "le", "eq") else ("eq", v)
        moment = _parse_instant(rest)
        if moment is None:
            return None
        out.append((prefix, moment))
    return out


def _matches(when: dt.datetime, filters: list[tuple[str, dt.datetime]]) -> bool:
    tests = {
        "gt": when.__gt__,
        "ge": when.__ge__,
        "lt": when.__lt__,
        "le": when.__le__,
        "eq": when.__eq__,
    }
    return all(tests[p](m) for p, m in filters)


async def search(request: web.Request) -> web.Response:
    if not _authorised(request):
        return _outcome(401, "login", "a bearer token is required")
    rtype = request.match_info["type"]
    if rtype not in TYPES:
        return _outcome(404, "not-supported", f"no resource type {rtype} here")
    q = request.query
    filters = _filters(q.getall("_lastUpdated", []))
    if filters is None:
        return _outcome(400, "invalid", "_lastUpdated takes a prefix and an instant with a time zone")
    if q.get("_sort", "_lastUpdated") != "_lastUpdated":
        return _outcome(400, "not-supported", "only _sort=_lastUpdated is supported")
    try:
        count = max(1, min(MAX_COUNT, int(q.get("_count", "50"))))
    except ValueError:
        return _outcome(400, "invalid", "_count must be a number")
    after: tuple[dt.datetime, str] | None = None
    if "_after" in q:
        stamp, _, rid = q["_after"].partition("|")
        moment = _parse_instant(stamp)
        if moment is None or not rid:
            return _outcome(400, "invalid", "bad paging cursor")
        after = (moment, rid)
    everything = sorted(
        (s for s in request.app[STATE].resources.get(rtype, {}).values() if _matches(s.updated, filters)),
        key=lambda s: s.key,
    )
    rows = [s for s in everything if after is None or s.key > after]
    page, more = rows[:count], len(rows) > count
    faults = faults_of(request.app)
    base = request.url.origin().join(URL(f"/fhir/{rtype}"))
    query = [(k, v) for k, v in q.items() if k != "_after"]
    links = [{"relation": "self", "url": str(base.with_query(query + ([("_after", q["_after"])] if after else [])))}]
    if more:
        cursor = page[-2] if faults.duplicates and len(page) > 1 else page[-1]  # the next page repeats one
        links.append(
            {
                "relation": "next",
                "url": str(base.with_query([*query, ("_after", f"{instant(cursor.updated)}|{cursor.resource['id']}")])),
            }
        )
    entries = [
        {"fullUrl": str(request.url.origin().join(URL(f"/fhir/{rtype}/{s.resource['id']}"))), "resource": s.resource}
        for s in page
    ]
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(everything),
        "link": links,
        "entry": shape_feed(entries, faults, first_expected=False),
    }
    return web.json_response(bundle, content_type=FHIR_JSON)


async def read(request: web.Request) -> web.Response:
    if not _authorised(request):
        return _outcome(401, "login", "a bearer token is required")
    stored = request.app[STATE].resources.get(request.match_info["type"], {}).get(request.match_info["id"])
    if stored is None:
        return _outcome(404, "not-found", "no such resource")
    return web.json_response(stored.resource, content_type=FHIR_JSON)


async def metadata(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "kind": "instance",
            "fhirVersion": "4.0.1",
            "format": ["json"],
            "rest": [
                {
                    "mode": "server",
                    "resource": [
                        {
                            "type": t,
                            "interaction": [{"code": "read"}, {"code": "search-type"}],
                            "searchParam": [{"name": "_lastUpdated", "type": "date"}],
                        }
                        for t in TYPES
                    ],
                }
            ],
        },
        content_type=FHIR_JSON,
    )


async def put_resource(request: web.Request) -> web.Response:
    """Sandbox control: store a resource (a new version if its id exists), stamped now or at ``?at=INSTANT``."""
    try:
        body = await request.json()
    except ValueError:
        return _outcome(400, "invalid", "send a resource")
    if not isinstance(body, dict) or body.get("resourceType") not in TYPES or not isinstance(body.get("id"), str):
        return _outcome(400, "invalid", f"a resource of {', '.join(TYPES)} with an id")
    when = dt.datetime.now(dt.UTC)
    if "at" in request.query:
        at = _parse_instant(request.query["at"])
        if at is None:
            return _outcome(400, "invalid", "at must be an instant with a time zone")
        when = at
    stored = request.app[STATE].put(body, when)
    return web.json_response(stored.resource, status=201, content_type=FHIR_JSON)


async def counts(request: web.Request) -> web.Response:
    return web.json_response({t: len(v) for t, v in request.app[STATE].resources.items()})


def _wrong(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _wrong(v) for k, v in value.items()}
    if isinstance(value, list):
        return "not-a-list"
    if isinstance(value, str):
        return 12345
    return "not-a-number"


@web.middleware
async def _malformed_fhir(request: web.Request, handler: Any) -> web.StreamResponse:
    """The shared ``truncated`` and ``wrong_types`` switches for FHIR JSON (the shared middleware rewrites only
    ``application/json``): runs outside it, and rewrites an answer the switches were spent on."""
    state = request.app[FAULTS]
    before = state["faulted"]
    resp = await handler(request)
    mode = faults_of(request.app).malformed
    if state["faulted"] == before or mode not in ("truncated", "wrong_types") or not isinstance(resp, web.Response):
        return resp
    if resp.content_type != FHIR_JSON or resp.body is None:
        return resp
    raw = bytes(resp.body)  # type: ignore[arg-type]
    if mode == "truncated":
        return web.Response(body=raw[: max(1, len(raw) // 2)], content_type=FHIR_JSON)
    return web.json_response(_wrong(json.loads(raw)), status=resp.status, content_type=FHIR_JSON)


def create_app(*, patients: int = 6, observations: int = 300, studies: int = 12) -> web.Application:
    app = make_app()
    app.middlewares.insert(0, _malformed_fhir)
    app[STATE] = seed(patients=patients, observations=observations, studies=studies)
    app.router.add_get("/fhir/metadata", metadata)
    app.router.add_get("/fhir/{type}", search)
    app.router.add_get("/fhir/{type}/{id}", read)
    app.router.add_post("/_sandbox/resources", put_resource)
    app.router.add_get("/_sandbox/resources", counts)
    return app


def started_app(**seeding: int):  # noqa: ANN201 - an async context manager yielding the base URL
    """This sandbox served on a free port: ``async with started_app() as url: ...`` (the FHIR base is url/fhir)."""
    return started(create_app(**seeding))
