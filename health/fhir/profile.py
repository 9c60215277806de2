"""Our profile on top of fhir.resources R4B: the resource types we take and the checks the models leave out.

fhir.resources checks structure, cardinality and the shape of primitive values (a ``2024-13-45`` is refused),
but not code values (``status: "bogus"`` passes) nor what recognition relies on: a coded ``code``, a subject, an
issued date. ``check`` runs both and names every problem by its FHIRPath-like ``expression``, so a hospital can
find the field in the entry it sent (``Bundle.entry[3].resource.effectiveDateTime``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.observation import Observation
from fhir.resources.R4B.organization import Organization
from fhir.resources.R4B.patient import Patient
from fhir.resources.R4B.practitioner import Practitioner
from fhir.resources.R4B.specimen import Specimen
from pydantic import ValidationError

from federation.identity.idnumber import mask_id_numbers_in_text

MODELS: dict[str, type[Any]] = {
    "Patient": Patient,
    "DiagnosticReport": DiagnosticReport,
    "Observation": Observation,
    "ImagingStudy": ImagingStudy,
    "Specimen": Specimen,
    "Organization": Organization,
    "Practitioner": Practitioner,
}

ID_NUMBER_SYSTEM = "urn:oid:2.16.156.10011.1.3"  # 居民身份证号码
# the social-security card number: no national URI exists for it, so the federation names it
SOCIAL_SECURITY_CARD_SYSTEM = "https://twincity.example/fhir/sid/social-security-card"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"  # identifier types; MR = medical record number
LOINC = "http://loinc.org"

# required value sets (FHIR R4) of the status elements
STATUSES: dict[str, frozenset[str]] = {
    "Observation": frozenset(
        {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"}
    ),
    "DiagnosticReport": frozenset(
        {
            "registered",
            "partial",
            "preliminary",
            "final",
            "amended",
            "corrected",
            "appended",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
    "ImagingStudy": frozenset({"registered", "available", "cancelled", "entered-in-error", "unknown"}),
    "Specimen": frozenset({"available", "unavailable", "unsatisfactory", "entered-in-error"}),
}
GENDERS = frozenset({"male", "female", "other", "unknown"})
COMPARATORS = frozenset({"<", "<=", ">=", ">"})
ISSUED_REQUIRED = frozenset({"final", "amended", "corrected", "appended"})
WITH_SUBJECT = frozenset({"Observation", "DiagnosticReport", "ImagingStudy"})
CLOCK_SKEW = dt.timedelta(minutes=10)  # a hospital's clock may run a little ahead of ours
CHINA = dt.timezone(dt.timedelta(hours=8))  # a date or time sent without an offset is China time
EARLIEST_YEAR = 1900  # no result, study or record update we take is older than this


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a resource: where (an expression relative to the resource), what, and the
    OperationOutcome issue code."""

    path: str
    message: str
    code: str = "invalid"


def expression(prefix: str, path: str) -> str:
    return f"{prefix}.{path}" if path else prefix


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_problems(exc: ValidationError) -> list[Problem]:
    """fhir.resources' errors as problems; the input is never echoed (it may carry an ID number)."""
    out = []
    for e in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = tuple(e["loc"])
        if loc and loc[0] == "resource_type":
            out.append(Problem("resourceType", "the resourceType does not match the resource", "structure"))
            continue
        code = "structure" if e["type"] == "extra_forbidden" else "value" if "value" in e["type"] else "invalid"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown element (not in FHIR R4)"
        out.append(Problem(_loc(loc), msg, code))
    return out


def check(resource: Any, *, now: dt.datetime | None = None) -> tuple[Any, list[Problem]]:
    """Validate one resource (a parsed JSON object): the fhir.resources model (None when it does not validate)
    and every problem found. Our checks run on the JSON even when the model fails, so one answer lists all."""
    if not isinstance(resource, dict):
        return None, [Problem("", "the resource must be a JSON object", "structure")]
    rtype = resource.get("resourceType")
    model_cls = MODELS.get(rtype) if isinstance(rtype, str) else None
    if model_cls is None:
        known = ", ".join(sorted(MODELS))
        sent = mask_id_numbers_in_text(str(rtype)[:40])  # echoed back: never a clear ID number
        return None, [Problem("resourceType", f"resourceType {sent!r} is not accepted here; send one of {known}")]
    problems: list[Problem] = []
    model = None
    try:
        model = model_cls.model_validate(resource)
    except ValidationError as e:
        problems.extend(_model_problems(e))
    except (TypeError, ValueError) as e:  # a malformed value the model's own code trips over
        problems.append(Problem("", f"the resource does not validate: {e.__class__.__name__}"))
    except RecursionError:
        return None, [Problem("", "the resource is nested too deeply", "structure")]
    problems.extend(profile_problems(resource, now or dt.datetime.now(dt.UTC)))
    return (model if not problems else None), problems


def _codings(concept: Any) -> list[dict[str, Any]]:
    if not isinstance(concept, dict):
        return []
    codings = concept.get("coding")
    return [c for c in codings if isinstance(c, dict)] if isinstance(codings, list) else []


def _coded(concept: Any, path: str, problems: list[Problem], *, required: bool = True) -> None:
    """A CodeableConcept recognition can use: at least one coding with both a system and a code."""
    if concept is None:
        if required:
            problems.append(Problem(path, "a code is required", "required"))
        return
    codings = _codings(concept)
    if required and not any(c.get("system") and c.get("code") for c in codings):
        problems.append(
            Problem(f"{path}.coding", "at least one coding with a system and a code is required", "code-invalid")
        )
    for i, c in enumerate(codings):
        if c.get("code") is not None and not str(c.get("code")).strip():
            problems.append(Problem(f"{path}.coding[{i}].code", "a code must not be blank", "code-invalid"))


def _parse(value: Any) -> dt.datetime | None:
    """The moment a dateTime/instant string names as written (its start, for a partial date), naive when sent
    without an offset; None for what is not one (the model says what is wrong with it)."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    try:
        if len(value) == 4:
            return dt.datetime(int(value), 1, 1)
        if len(value) == 7:
            return dt.datetime(int(value[:4]), int(value[5:7]), 1)
        if len(value) == 10:
            return dt.datetime.fromisoformat(value)
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError):
        return None


def to_utc(value: Any) -> dt.datetime | None:
    """A FHIR date/dateTime/instant as an aware UTC datetime (a date, or a time without an offset, is China
    time); None for what is not one or has no UTC equivalent (``0001-01-01T00:00:00+14:00`` is in year 0)."""
    moment = _parse(value)
    if moment is None:
        return None
    try:
        return (moment if moment.tzinfo else moment.replace(tzinfo=CHINA)).astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return None


def _when(value: Any, path: str, now: dt.datetime | None, problems: list[Problem]) -> None:
    """A date the ingest turns into a column: not before 1900, representable in UTC, and (given ``now``) not in
    the future. Python's datetime stops at years 1 and 9999: a value at either end, once moved to UTC, would
    fall outside it, and nothing that old or that far ahead is a result."""
    moment = _parse(value)
    if moment is None:
        return
    if moment.year < EARLIEST_YEAR:
        problems.append(Problem(path, f"a date before {EARLIEST_YEAR} is not a result we accept", "value"))
        return
    utc = to_utc(value)
    if utc is None:
        problems.append(Problem(path, "a date that has no UTC equivalent (past the end of the calendar)", "value"))
        return
    if now is not None and utc > now + CLOCK_SKEW:
        problems.append(Problem(path, "a date in the future", "value"))


def profile_problems(r: dict[str, Any], now: dt.datetime) -> list[Problem]:
    """Our checks on the resource's JSON (independent of the model, so they run even when it fails)."""
    problems: list[Problem] = []
    rtype = r.get("resourceType")
    allowed = STATUSES.get(rtype)  # type: ignore[arg-type]
    status = r.get("status")
    if allowed is not None:
        if status is None:
            if rtype != "Specimen":
                problems.append(Problem("status", "a status is required", "required"))
        elif status not in allowed:
            problems.append(Problem("status", f"status must be one of {', '.join(sorted(allowed))}", "code-invalid"))
    if rtype in ("Observation", "DiagnosticReport"):
        _coded(r.get("code"), "code", problems)
        for i, cat in enumerate(r.get("category") or () if isinstance(r.get("category"), list) else ()):
            _coded(cat, f"category[{i}]", problems, required=False)
        for field in ("effectiveDateTime", "effectiveInstant"):
            _when(r.get(field), field, now, problems)
        period = r.get("effectivePeriod")
        if isinstance(period, dict):
            _when(period.get("start"), "effectivePeriod.start", now, problems)
            _when(period.get("end"), "effectivePeriod.end", None, problems)
        _when(r.get("issued"), "issued", now, problems)
    if rtype == "DiagnosticReport" and status in ISSUED_REQUIRED and not r.get("issued"):
        problems.append(Problem("issued", f"a {status} report must say when it was issued", "required"))
    if rtype == "Observation":
        _quantities(r, problems)
    if rtype in WITH_SUBJECT:
        subject = r.get("subject")
        if not isinstance(subject, dict) or not isinstance(subject.get("reference"), str):
            problems.append(Problem("subject", "a reference to the patient is required", "required"))
    if rtype == "ImagingStudy":
        _when(r.get("started"), "started", now, problems)
        series = r.get("series") if isinstance(r.get("series"), list) else []
        for i, s in enumerate(series):
            modality = s.get("modality") if isinstance(s, dict) else None
            if not isinstance(modality, dict) or not str(modality.get("code") or "").strip():
                problems.append(Problem(f"series[{i}].modality.code", "a DICOM modality code is required", "required"))
    if rtype in ("Patient", "Practitioner"):
        gender = r.get("gender")
        if gender is not None and gender not in GENDERS:
            problems.append(Problem("gender", f"gender must be one of {', '.join(sorted(GENDERS))}", "code-invalid"))
        birth = _parse(r.get("birthDate"))
        if birth is not None and birth.replace(tzinfo=dt.UTC) > now + CLOCK_SKEW:
            problems.append(Problem("birthDate", "a date in the future", "value"))
    meta = r.get("meta")
    if isinstance(meta, dict):  # compared with what is stored to tell an older version from a newer one
        _when(meta.get("lastUpdated"), "meta.lastUpdated", None, problems)
    return problems


def _quantities(r: dict[str, Any], problems: list[Problem]) -> None:
    """Quantity comparators (a required value set the models leave unchecked), in the value and components."""
    places: list[tuple[str, Any]] = [("valueQuantity", r.get("valueQuantity"))]
    for i, c in enumerate(r.get("component") or () if isinstance(r.get("component"), list) else ()):
        if isinstance(c, dict):
            _coded(c.get("code"), f"component[{i}].code", problems)
            places.append((f"component[{i}].valueQuantity", c.get("valueQuantity")))
    for path, q in places:
        if isinstance(q, dict) and q.get("comparator") is not None and q["comparator"] not in COMPARATORS:
            problems.append(Problem(f"{path}.comparator", "comparator must be one of <, <=, >=, >", "code-invalid"))
