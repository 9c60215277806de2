"""A patient's prior results from every member hospital, each with the verdict computed now.

A "result" is what a doctor could decide not to repeat: a laboratory Observation, an imaging DiagnosticReport or an
ImagingStudy. Laboratory DiagnosticReports are panels whose Observations are the results, so they are not listed
on their own. Withdrawn (entered-in-error) resources are never listed.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from federation.db import row_tuple
from federation.identity.models import Person
from health import recognition
from health.models import StoredResource

RESULT_TYPES = ("Observation", "DiagnosticReport", "ImagingStudy")
CHINA = dt.timezone(dt.timedelta(hours=8))
MAX_RESULTS = 5000


@dataclasses.dataclass(frozen=True)
class Filters:
    category: str | None = None  # laboratory | imaging
    item: str | None = None  # a catalogue item code
    since: dt.date | None = None
    limit: int = 50
    after: tuple[dt.datetime, str] | None = None  # keyset: continue after this (effective_at, id)


@dataclasses.dataclass(frozen=True)
class PriorResult:
    row: Any  # a row of prior_results' columns
    verdict: recognition.Verdict
    hospital_code: str
    hospital_name: str
    hospital_city: str | None

    @property
    def issued(self) -> dt.datetime | None:
        return self.row.issued_at or self.row.effective_at


def cursor(row: StoredResource) -> str:
    """An opaque position after ``row`` in newest-first order."""
    at = row.effective_at.isoformat() if row.effective_at else ""
    return base64.urlsafe_b64encode(f"{at}|{row.id}".encode()).decode().rstrip("=")


def parse_cursor(text: str) -> tuple[dt.datetime, str] | None:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        at, _, row_id = raw.partition("|")
        return dt.datetime.fromisoformat(at), row_id
    except (ValueError, UnicodeDecodeError):
        return None


async def person_ids(session: AsyncSession, person_id: str) -> list[str]:
    """The person and everyone merged into them (results stay under the id they arrived with)."""
    ids, frontier = [person_id], [person_id]
    while frontier and len(ids) < 64:
        q = select(Person.id).where(Person.merged_into_id.in_(frontier))
        frontier = [i for i in (await session.execute(q)).scalars() if i not in ids]
        ids += frontier
    return ids


# what a result row needs, without the ORM's identity map: a doctor's page is read, judged and shown, never changed
_COLUMNS = (
    StoredResource.id,
    StoredResource.resource_type,
    StoredResource.institution_id,
    StoredResource.category,
    StoredResource.code_system,
    StoredResource.code,
    StoredResource.status,
    StoredResource.effective_at,
    StoredResource.issued_at,
    StoredResource.body,
)
ResultRow = row_tuple("ResultRow", _COLUMNS)


@functools.lru_cache(maxsize=64)
def _page_statement(category: str | None, since: bool, after: bool, merged: bool) -> Any:
    """The page query for one shape of filters, built once: its values are bound parameters (``person``, or the
    expanding ``persons`` when others were merged into the patient; ``since``; ``at`` and ``last_id``; ``limit``).

    Per result type, a branch walking ``ix_fhir_resources_person_type_effective`` backwards and stopping after
    ``limit`` rows (UNION ALL): the cost follows the page size, not the patient's history."""
    branches = []
    for rtype in RESULT_TYPES:
        if category == "laboratory" and rtype == "ImagingStudy":
            continue
        whose = (
            StoredResource.person_id.in_(bindparam("persons", expanding=True))
            if merged
            else StoredResource.person_id == bindparam("person")
        )
        q = select(*_COLUMNS).where(
            whose,
            StoredResource.resource_type == rtype,
            StoredResource.effective_at.is_not(None),
            StoredResource.withdrawn.is_(False),
        )
        if rtype == "DiagnosticReport":  # a laboratory report is a panel: its Observations are the results
            q = q.where(StoredResource.category != "laboratory")
        if category:
            q = q.where(StoredResource.category == category)
        if since:
            q = q.where(StoredResource.effective_at >= bindparam("since", type_=StoredResource.effective_at.type))
        if after:
            at = bindparam("at", type_=StoredResource.effective_at.type)
            q = q.where(
                or_(
                    StoredResource.effective_at < at,
                    and_(StoredResource.effective_at == at, StoredResource.id < bindparam("last_id")),
                )
            )
        q = q.order_by(StoredResource.effective_at.desc(), StoredResource.id.desc()).limit(bindparam("limit"))
        branches.append(q.subquery().select())  # its own ORDER BY and LIMIT, inside the compound
    return union_all(*branches)


async def prior_results(
    session: AsyncSession,
    person_id: str,
    filters: Filters,
    today: dt.date | None = None,
    *,
    persons: Sequence[str] | None = None,
) -> tuple[list[PriorResult], Any | None]:
    """One page, newest first, and the row to continue after (None on the last page). ``filters.item`` is applied
    after judging (the item of a result comes from the catalogue), so a page may hold fewer than ``limit``.
    ``persons``: the person and everyone merged into them, when the caller knows it (the access check does).

    One statement (:func:`_page_statement`), its branches merged here. A result without any date cannot be judged
    against a window and is not listed here (FHIR search still returns it)."""
    limit = min(filters.limit, MAX_RESULTS)
    ids = list(persons) if persons else await person_ids(session, person_id)
    merged = len(ids) > 1
    params: dict[str, Any] = {"limit": limit, **({"persons": ids} if merged else {"person": ids[0]})}
    if filters.since:
        params["since"] = dt.datetime.combine(filters.since, dt.time(), CHINA)
    if filters.after:
        params["at"], params["last_id"] = filters.after
    statement = _page_statement(filters.category, filters.since is not None, filters.after is not None, merged)
    make = ResultRow._make  # type: ignore[attr-defined]
    rows: list[Any] = [make(r) for r in await session.execute(statement, params)]
    rows.sort(key=lambda r: (r.effective_at, r.id), reverse=True)
    full = len(rows) >= limit  # a full page: there may be more (at worst the next page is empty)
    rows = rows[:limit]
    catalogue = await recognition.load_catalogue(session)
    day = today or recognition.today_in_china()
    out = []
    for row in rows:
        verdict = catalogue.judge(recognition.facts_of(row), day)
        if filters.item and verdict.item_code != filters.item:
            continue
        hospital = catalogue.institutions.get(row.institution_id)
        if hospital is None:
            out.append(PriorResult(row, verdict, "?", "?", None))
        else:
            out.append(PriorResult(row, verdict, hospital.code, hospital.name, hospital.city))
    return out, (rows[-1] if full else None)


def group_by_item(results: Sequence[PriorResult]) -> list[tuple[str, str, list[PriorResult]]]:
    """(key, title, results) per item, groups ordered by their newest result; results without a catalogue item are
    grouped by their own code."""
    groups: dict[str, tuple[str, list[PriorResult]]] = {}
    for r in results:
        if r.verdict.item_code:
            key, title = r.verdict.item_code, r.verdict.item_name or r.verdict.item_code
        else:
            key = f"{r.row.code_system or ''}|{r.row.code or ''}"
            title = display(r.row.body) or r.row.code or r.row.resource_type
        groups.setdefault(key, (title, []))[1].append(r)
    return [(key, title, items) for key, (title, items) in groups.items()]


# -- what a doctor reads at a glance -----------------------------------------------------------------------------


def display(body: dict[str, Any]) -> str | None:
    """The human name of what was measured or examined."""
    code = body.get("code") or {}
    if isinstance(code, dict):
        if code.get("text"):
            return str(code["text"])
        for coding in code.get("coding") or ():
            if coding.get("display"):
                return str(coding["display"])
    if body.get("resourceType") == "ImagingStudy":
        return body.get("description") or _series_title(body)
    return None


def _series_title(body: dict[str, Any]) -> str | None:
    for series in body.get("series") or ():
        modality = (series.get("modality") or {}).get("code")
        site = (series.get("bodySite") or {}).get("display")
        return " ".join(x for x in (modality, site) if x) or None
    return None


def _number(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def _quantity(q: dict[str, Any]) -> str:
    unit = q.get("unit") or q.get("code") or ""
    value = q.get("value")
    comparator = q.get("comparator") or ""
    return f"{comparator}{_number(value)} {unit}".strip() if value is not None else unit


def _concept(c: dict[str, Any]) -> str:
    if c.get("text"):
        return str(c["text"])
    for coding in c.get("coding") or ():
        return str(coding.get("display") or coding.get("code") or "")
    return ""


def value_text(body: dict[str, Any]) -> str | None:
    """The value of an Observation (every value[x] type), or a report's conclusion, in one line."""
    kind = body.get("resourceType")
    if kind == "DiagnosticReport":
        return body.get("conclusion")
    if kind == "ImagingStudy":
        n = body.get("numberOfInstances")
        return f"{n} images" if n else body.get("description")
    text = _value(body)
    components = [f"{_concept(c.get('code') or {})}: {_value(c) or ''}".strip() for c in body.get("component") or ()]
    parts = ([text] if text else []) + components
    return "; ".join(parts) or None


def _value(b: dict[str, Any]) -> str | None:
    if "valueQuantity" in b:
        return _quantity(b["valueQuantity"])
    if "valueCodeableConcept" in b:
        return _concept(b["valueCodeableConcept"])
    if "valueRange" in b:
        r = b["valueRange"]
        return f"{_quantity(r.get('low') or {})} – {_quantity(r.get('high') or {})}"
    if "valueRatio" in b:
        r = b["valueRatio"]
        return f"{_quantity(r.get('numerator') or {})} / {_quantity(r.get('denominator') or {})}"
    if "valuePeriod" in b:
        p = b["valuePeriod"]
        return f"{p.get('start', '')} – {p.get('end', '')}"
    if "valueSampledData" in b:
        return "sampled data"
    for key in ("valueString", "valueBoolean", "valueInteger", "valueTime", "valueDateTime"):
        if key in b:
            return _number(b[key]) if not isinstance(b[key], bool) else ("yes" if b[key] else "no")
    if "dataAbsentReason" in b:
        return f"absent: {_concept(b['dataAbsentReason'])}"
    return None


def interpretation(body: dict[str, Any]) -> list[str]:
    out = []
    for c in body.get("interpretation") or ():
        for coding in c.get("coding") or ():
            if coding.get("code"):
                out.append(str(coding["code"]))
    return out


def reference_range(body: dict[str, Any]) -> str | None:
    for rr in body.get("referenceRange") or ():
        if rr.get("text"):
            return str(rr["text"])
        low, high = rr.get("low"), rr.get("high")
        if low or high:
            return f"{_quantity(low or {})} – {_quantity(high or {})}".strip(" –")
    return None
