"""Applying a page of a hospital's changes: one batch Bundle through the health ingest, then the watermark.

The watermark is one ``meta.lastUpdated`` instant per resource type, kept as compact JSON in the connector's row
(``{"Patient": "2026-06-01T00:00:05.000000Z", ...}``). Per page it moves to the greatest instant of the page, with
one exception: while more pages follow, resources sharing the page's greatest instant may continue on the next
page, and a resumed ``_lastUpdated=gt`` query would skip them; so mid-list it moves only to the greatest instant
*below* that one (the resources at that instant are fetched again after a crash, and stored again unchanged).

The ingest commits on its own (``ingest_items`` opens its unit of work), so the watermark is committed right after
it, in a second transaction. A crash between the two leaves the watermark behind data already stored: the next run
fetches that page again and the ingest, idempotent by hospital + resource type + id, finds it unchanged. The
watermark therefore never passes uncommitted data; at worst it lags by one page.
"""

from __future__ import annotations

import collections
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


def parse_marks(raw: str | None) -> dict[str, dt.datetime]:
    if not raw:
        return {}
    try:
        data = json.loads(raw)
        return {str(k): parse_instant(str(v)) for k, v in data.items()}
    except (ValueError, AttributeError) as e:
        raise InvalidConnector(f"the stored watermark is not this kind's ({e.__class__.__name__})") from None


def dump_marks(marks: Mapping[str, dt.datetime]) -> str:
    ordered = {t: fhir_instant(marks[t]) for t in sorted(marks, key=_order)}
    raw = json.dumps(ordered, separators=(",", ":"))
    if len(raw) > MAX_WATERMARK:
        raise InvalidConnector(f"the watermarks of {len(marks)} resource types do not fit; pull fewer types")
    return raw


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
