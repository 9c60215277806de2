"""Stored FHIR results for the REST endpoint's tests, written fast: bulk Core inserts into fhir_resources, the
bodies shaped as the ingest stores them (our ids, ``meta.versionId``/``lastUpdated``, ``Patient/<person id>``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select

from federation.db import new_id
from federation.identity import service as identity
from federation.identity.models import IdentifierType
from federation.members.models import Institution
from federation.services import Services
from health.models import ItemVersion, RecognitionItem, ResourceLink, StoredResource

LOINC = "http://loinc.org"
OBS_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
GLUCOSE = (LOINC, "2345-7", "Glucose [Mass/volume] in Serum or Plasma")
HBA1C = (LOINC, "4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood")


async def person_of(svc: Services, id_number: str) -> str:
    async with svc.db.reader() as s:
        found = await identity.find_identifier(
            s, svc.cipher, identity.IdentifierInput(IdentifierType.ID_NUMBER, id_number)
        )
    assert found is not None
    return found.person_id


async def person_by_record(svc: Services, name: str, record_number: str, hospital: str) -> str:
    """A new person known only by a hospital's record number (as a hospital's first contact registers them)."""
    record = identity.IdentifierInput(IdentifierType.LOCAL, record_number, hospital, "hospital_record")
    async with svc.db.uow() as uow:
        reg = await identity.register(uow, svc, identity.RegisterPerson(name=name, identifiers=[record]), actor="test")
        await uow.commit()
    return reg.person.id


async def institution(svc: Services, code: str) -> str:
    async with svc.db.reader() as s:
        return (await s.execute(select(Institution.id).where(Institution.code == code))).scalar_one()


def _instant(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def observation(
    person_id: str,
    institution_id: str,
    at: dt.datetime,
    *,
    code: tuple[str, str, str] = GLUCOSE,
    status: str = "final",
    category: str = "laboratory",
    value: float = 5.4,
    updated: dt.datetime | None = None,
    withdrawn: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One fhir_resources row of an Observation (a dict for a bulk insert)."""
    rid = new_id()
    updated = updated or at + dt.timedelta(hours=1)
    body: dict[str, Any] = {
        "resourceType": "Observation",
        "id": rid,
        "meta": {"versionId": "1", "lastUpdated": _instant(updated)},
        "status": status,
        "category": [{"coding": [{"system": OBS_CATEGORY, "code": category}]}],
        "code": {"coding": [{"system": code[0], "code": code[1], "display": code[2]}]},
        "subject": {"reference": f"Patient/{person_id}"},
        "effectiveDateTime": _instant(at),
        "issued": _instant(at + dt.timedelta(minutes=30)),
        "valueQuantity": {"value": value, "unit": "mmol/L", "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        **(extra or {}),
    }
    return _row(rid, "Observation", person_id, institution_id, at, updated, status, category, code, body, withdrawn)


def report(
    person_id: str,
    institution_id: str,
    at: dt.datetime,
    results: Sequence[dict[str, Any]],
    *,
    code: tuple[str, str, str] = (LOINC, "24323-8", "Comprehensive metabolic panel"),
) -> dict[str, Any]:
    rid = new_id()
    updated = at + dt.timedelta(hours=2)
    body = {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "meta": {"versionId": "1", "lastUpdated": _instant(updated)},
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}],
        "code": {"coding": [{"system": code[0], "code": code[1], "display": code[2]}]},
        "subject": {"reference": f"Patient/{person_id}"},
        "effectiveDateTime": _instant(at),
        "issued": _instant(at + dt.timedelta(hours=1)),
        "result": [{"reference": f"Observation/{r['id']}"} for r in results],
    }
    return _row(rid, "DiagnosticReport", person_id, institution_id, at, updated, "final", "laboratory", code, body)


def provenance(institution_id: str, targets: Sequence[dict[str, Any]], at: dt.datetime) -> dict[str, Any]:
    rid = new_id()
    body = {
        "resourceType": "Provenance",
        "id": rid,
        "meta": {"versionId": "1", "lastUpdated": _instant(at)},
        "target": [{"reference": f"{t['resource_type']}/{t['id']}"} for t in targets],
        "recorded": _instant(at),
        "agent": [{"who": {"display": "LIS"}}],
    }
    row = _row(rid, "Provenance", None, institution_id, None, at, None, None, None, body)
    return row


def _row(
    rid: str,
    rtype: str,
    person_id: str | None,
    institution_id: str,
    at: dt.datetime | None,
    updated: dt.datetime,
    status: str | None,
    category: str | None,
    code: tuple[str, str, str] | None,
    body: dict[str, Any],
    withdrawn: bool = False,
) -> dict[str, Any]:
    return {
        "id": rid,
        "resource_type": rtype,
        "institution_id": institution_id,
        "source_id": f"src-{rid}",
        "version": 1,
        "last_updated": updated,
        "status": status,
        "person_id": person_id,
        "category": category,
        "code_system": code[0] if code else None,
        "code": code[1] if code else None,
        "effective_at": at,
        "issued_at": at + dt.timedelta(minutes=30) if at else None,
        "withdrawn": withdrawn,
        "body": body,
    }


async def store(svc: Services, rows: Sequence[dict[str, Any]], links: Sequence[tuple[str, str, str]] = ()) -> None:
    """Bulk-insert rows and (source, rel, target) links in one transaction."""
    async with svc.db.uow() as uow:
        if rows:
            await uow.session.execute(insert(StoredResource.__table__), list(rows))
        if links:
            await uow.session.execute(
                insert(ResourceLink.__table__), [{"source_id": s, "rel": r, "target_id": t} for s, r, t in links]
            )
        await uow.commit()


async def glucose_in_catalogue(svc: Services, *, since: dt.date = dt.date(2020, 1, 1), window_days: int = 180) -> None:
    """Serum glucose as a recognition item (any level, no QC needed), so fresh final results are recognised."""
    async with svc.db.uow() as uow:
        item = RecognitionItem(
            code="LAB-GLU", category="laboratory", name="血清葡萄糖", loinc=GLUCOSE[1], qc_category="laboratory"
        )
        uow.session.add(item)
        await uow.session.flush()
        uow.session.add(
            ItemVersion(
                item_id=item.id,
                version=1,
                effective_from=since,
                window_days=window_days,
                levels=[],
                public_only=False,
                qc_required=False,
            )
        )
        await uow.commit()
