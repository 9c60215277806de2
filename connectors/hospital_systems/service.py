"""Applying a page of a hospital's changes: one batch Bundle through the health ingest, then the watermark.

The watermark is one ``meta.lastUpdated`` instant per resource type, kept as compact JSON in the connector's row
(``{"Patient": "2026-06-01T00:00:05.000000Z", ...}``). Per page it moves to the greatest instant of the page, with
one exception: while more pages follow, resources sharing the page's greatest instant may continue on the next
page, and a resumed ``_lastUpdated=gt`` query would skip them; so mid-list it moves only to the greatest instant
*below* that one (the resources at that instant are fetched again after a crash, and stored again unchanged).

A resource the ingest refuses (most often a result whose Patient the hospital has not sent yet) holds its type's
watermark just below it: the rest of the run still stores what follows, but the next run asks again from there,
so a Patient arriving later lets the result in (nothing is skipped for good). The runs held at the same instant are
counted in the watermark (``{"Observation": ["...Z", 3]}``); once a refusal outlives the connector's option
``refusal_retries`` (``DEFAULT_REFUSAL_RETRIES`` further runs), it is given up: its ids are written to the
connector's last error and the watermark moves on, so one permanently bad resource cannot hold the feed forever.

The ingest commits on its own (``ingest_items`` opens its unit of work), so the watermark is committed right after
it, in a second transaction. A crash between the two leaves the watermark behind data already stored: the next run
fetches that page again and the ingest, idempotent by hospital + resource type + id, finds it unchanged. The
watermark therefore never passes uncommitted data; at worst it lags by one page.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from connectors.framework.errors import InvalidConnector
from connectors.hospital_systems.adapter import fhir_instant
from connectors.hospital_systems.port import Changed
from connectors.hospital_systems.schemas import parse_instant
from federation.services import Services
from health.fhir.ingest import IngestResult, ingest_bundle

# Referenced types first: results refer to Patients, reports to Observations and ImagingStudies, and the ingest
# resolves a reference through what the hospital stored before
RESOURCE_TYPES = ("Patient", "Observation", "ImagingStudy", "DiagnosticReport")
MAX_WATERMARK = 200  # the connectors table's watermark column
# further runs a refused resource holds its type's watermark for: an hour at the 300 s schedule, for a Patient sent
# late; kept below 100 so four held types still fit the watermark column
DEFAULT_REFUSAL_RETRIES = 12
MAX_REFUSAL_RETRIES = 99


def parse_state(raw: str | None) -> tuple[dict[str, dt.datetime], dict[str, int]]:
    """The stored watermark: each type's instant, and for a type held by a refusal the runs held there (a held type
    may have no instant yet: its first page began with the refusal)."""
    if not raw:
        return {}, {}
    marks: dict[str, dt.datetime] = {}
    held: dict[str, int] = {}
    try:
        data = json.loads(raw)
        for k, v in data.items():
            if isinstance(v, list):
                at, runs = v
                if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
                    raise ValueError("held runs")
                held[str(k)] = runs
                if at is not None:
                    marks[str(k)] = parse_instant(str(at))
            else:
                marks[str(k)] = parse_instant(str(v))
    except (ValueError, AttributeError, TypeError) as e:
        raise InvalidConnector(f"the stored watermark is not this kind's ({e.__class__.__name__})") from None
    return marks, held


def dump_state(marks: Mapping[str, dt.datetime], held: Mapping[str, int]) -> str:
    ordered: dict[str, Any] = {}
    for t in sorted(set(marks) | set(held), key=_order):
        at = fhir_instant(marks[t]) if t in marks else None
        ordered[t] = [at, held[t]] if t in held else at
    raw = json.dumps(ordered, separators=(",", ":"))
    if len(raw) > MAX_WATERMARK:
        raise InvalidConnector(f"the watermarks of {len(ordered)} resource types do not fit; pull fewer types")
    return raw


def parse_marks(raw: str | None) -> dict[str, dt.datetime]:
    return parse_state(raw)[0]


def dump_marks(marks: Mapping[str, dt.datetime]) -> str:
    return dump_state(marks, {})


def refusal_retries(options: Mapping[str, Any]) -> int:
    value = options.get("refusal_retries", DEFAULT_REFUSAL_RETRIES)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_REFUSAL_RETRIES:
        raise InvalidConnector(f"option refusal_retries must be a whole number from 0 to {MAX_REFUSAL_RETRIES}")
    return value


def _order(rtype: str) -> tuple[int, str]:
    return (RESOURCE_TYPES.index(rtype) if rtype in RESOURCE_TYPES else len(RESOURCE_TYPES), rtype)


def resource_types(options: Mapping[str, Any]) -> list[str]:
    """The types to pull, Patients first whatever the option's order."""
    wanted = options.get("resource_types", RESOURCE_TYPES)
    if not isinstance(wanted, list | tuple) or not all(isinstance(t, str) and t.isalpha() for t in wanted):
        raise InvalidConnector("option resource_types must be a list of FHIR resource type names")
    return sorted(dict.fromkeys(wanted), key=_order)


def latest(resources: Sequence[Changed]) -> list[Changed]:
    """One entry per resource, the most recent one: a page (or a broken server) may repeat a resource, and the
    ingest refuses the same resource twice in one load."""
    best: dict[str, Changed] = {}
    for r in resources:
        old = best.get(r.id)
        if old is None or r.updated > old.updated:
            best[r.id] = r
    return sorted(best.values(), key=lambda r: (r.updated, r.id))


def next_mark(current: dt.datetime | None, page: Sequence[Changed], *, more: bool) -> dt.datetime | None:
    """Where the watermark may move after this page is stored (see the module docstring)."""
    instants = sorted({r.updated for r in page})
    if not instants:
        return current
    candidate: dt.datetime | None = instants[-1]
    if more:
        candidate = instants[-2] if len(instants) > 1 else None
    if candidate is None or (current is not None and candidate <= current):
        return current
    return candidate


@dataclasses.dataclass(frozen=True)
class Hold:
    """Where a type's watermark stays for a refused resource: ``at`` (None: the type has no instant yet), held there
    for ``runs`` consecutive runs, this one included."""

    at: dt.datetime | None
    runs: int


def hold_for(
    start: dt.datetime | None,
    start_runs: int,
    current: dt.datetime | None,
    page: Sequence[Changed],
    refused: Sequence[Changed],
    *,
    retries: int,
) -> tuple[Hold | None, list[Changed]]:
    """Where the watermark must stay for the refused resources of a stored ``page``, and those given up.

    ``start``/``start_runs`` are the type's watermark and held runs as the run found them, ``current`` the watermark
    before this page. The watermark stays at the greatest instant of the page below the earliest refusal (every
    resource there is on this page: a later instant follows on it), so the next run asks for the refused resource
    again. Held at the run's starting instant, it has been refused in ``start_runs`` runs before: past ``retries``
    further runs the resources at that instant are given up and the next refusal of the page, if any, decides."""
    given_up: list[Changed] = []
    pending = sorted(refused, key=lambda r: (r.updated, r.id))
    while pending:
        first = pending[0].updated
        at = next_mark(current, [r for r in page if r.updated < first], more=False)
        runs = start_runs + 1 if at == start else 1
        if runs <= retries:
            return Hold(at, runs), given_up
        given_up += [r for r in pending if r.updated == first]
        pending = [r for r in pending if r.updated != first]
    return None, given_up


def refused_of(resources: Sequence[Changed], result: IngestResult) -> list[Changed]:
    """The resources of a stored page that the ingest refused (its items are the page's entries, in order)."""
    return [resources[i.index] for i in result.items if i.outcome == "error" and 0 <= i.index < len(resources)]


def batch_bundle(resources: Sequence[Changed]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": r.resource, "request": {"method": "PUT", "url": f"{r.rtype}/{r.id}"}} for r in resources
        ],
    }


async def store(
    svc: Services, resources: Sequence[Changed], *, institution: str, actor: str
) -> tuple[IngestResult, collections.Counter[str]]:
    """Store a page through the health ingest (a batch: each resource stands or falls alone); the counts of its
    outcomes (created, updated, unchanged, stale, refused)."""
    result = await ingest_bundle(svc, batch_bundle(resources), institution=institution, actor=actor)
    counts: collections.Counter[str] = collections.Counter()
    for item in result.items:
        counts["refused" if item.outcome == "error" else item.outcome] += 1
    return result, counts
