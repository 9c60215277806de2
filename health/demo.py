"""The demo hospitals' results for the demo residents, pushed through the real FHIR ingest.

Each demo hospital sends one transaction Bundle: its patients (identified by the resident ID number, the way
hospital systems do) and a few hundred laboratory Observations and imaging reports spread over the last year and a
half, so a doctor sees some results recognised (HR), some too old for their item's window, and a few that are not
recognised for other reasons: one from a private clinic the catalogue does not accept, one whose test is not in the
catalogue, one still preliminary. Dates are relative to the day of loading; loading again changes nothing.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

from sqlalchemy import select

from federation.demo import HOSPITALS, RESIDENTS, DemoResident
from federation.members import service as members
from federation.members.models import Institution
from federation.services import Services
from health.fhir.ingest import ingest_bundle
from health.models import StoredResource

ID_SYSTEM = "urn:oid:2.16.156.10011.1.3"
LOINC = "http://loinc.org"
CHINA = dt.timezone(dt.timedelta(hours=8))
CLINIC = ("CQP1", "重庆康宁民营诊所", "chongqing", "重庆", "一级", "private")
ACTOR = "demo"

# LOINC code → (display, unit, low, high): reference ranges of adults
LAB: dict[str, tuple[str, str, float, float]] = {
    "2345-7": ("Glucose [Moles/volume] in Serum or Plasma", "mmol/L", 3.9, 6.1),
    "4548-4": ("Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.0, 6.0),
    "2160-0": ("Creatinine [Mass/volume] in Serum or Plasma", "umol/L", 57, 111),
    "1742-6": ("Alanine aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 9, 50),
    "1920-8": ("Aspartate aminotransferase [Enzymatic activity/volume] in Serum or Plasma", "U/L", 15, 40),
    "2093-3": ("Cholesterol [Mass/volume] in Serum or Plasma", "mmol/L", 2.8, 5.2),
    "2823-3": ("Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.5, 5.3),
    "718-7": ("Hemoglobin [Mass/volume] in Blood", "g/L", 115, 150),
    "6690-2": ("Leukocytes [#/volume] in Blood by Automated count", "10*9/L", 3.5, 9.5),
    "777-3": ("Platelets [#/volume] in Blood by Automated count", "10*9/L", 125, 350),
    "3016-3": ("Thyrotropin [Units/volume] in Serum or Plasma", "mIU/L", 0.27, 4.2),
}
NOT_IN_CATALOGUE = ("1989-3", "25-Hydroxyvitamin D3 [Mass/volume] in Serum or Plasma", "ng/mL", 30, 100)
IMAGING = [  # report LOINC, display, DICOM modality, SNOMED body site, site display, conclusion
    ("24627-2", "CT Chest", "CT", "51185008", "Thoracic structure", "双肺未见明显异常。"),
    ("36643-5", "XR Chest 2 Views", "DX", "51185008", "Thoracic structure", "心肺膈未见异常。"),
    ("24558-9", "US Abdomen", "US", "818983003", "Abdomen", "肝胆胰脾未见明显异常。"),
]


def _uuid(*parts: str) -> str:
    return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, "twincity-demo:" + ":".join(parts)))


def _when(days_ago: int, hour: int) -> str:
    day = dt.datetime.now(CHINA).replace(hour=hour, minute=30, second=0, microsecond=0) - dt.timedelta(days=days_ago)
    return day.isoformat()


def _patient(hospital: str, r: DemoResident, idx: int) -> dict[str, Any]:
    return {
        "fullUrl": _uuid(hospital, "patient", r.ss_card),
        "resource": {
            "resourceType": "Patient",
            "id": f"{hospital.lower()}-p{idx:03d}",
            "identifier": [
                {"system": ID_SYSTEM, "value": r.id_number},
                {
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                    "system": f"urn:twincity:member:{hospital}:mrn",
                    "value": f"{hospital}-MRN-{idx:05d}",
                },
            ],
            "name": [{"text": r.name, "family": r.name[0], "given": [r.name[1:]]}],
            "gender": "male" if int(r.seq[-1]) % 2 else "female",
            "birthDate": f"{r.birth[:4]}-{r.birth[4:6]}-{r.birth[6:]}",
        },
        "request": {"method": "PUT", "url": f"Patient/{hospital.lower()}-p{idx:03d}"},
    }


def _observation(
    hospital: str, patient_url: str, key: str, loinc: tuple[str, str, str, float, float], days_ago: int, status: str
) -> dict[str, Any]:
    code, display, unit, low, high = loinc
    rng = random.Random(key)
    value = round(rng.uniform(low * 0.8, high * 1.2), 1)
    flag = "H" if value > high else "L" if value < low else "N"
    oid = f"{hospital.lower()}-o-{key}"
    return {
        "fullUrl": _uuid(hospital, "obs", key),
        "resource": {
            "resourceType": "Observation",
            "id": oid,
            "status": status,
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "laboratory",
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
            "subject": {"reference": patient_url},
            "effectiveDateTime": _when(days_ago, 8),
            "issued": _when(days_ago, 11),
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit},
            "interpretation": [
                {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": flag}
                    ]
                }
            ],
            "referenceRange": [{"low": {"value": low, "unit": unit}, "high": {"value": high, "unit": unit}}],
        },
        "request": {"method": "PUT", "url": f"Observation/{oid}"},
    }


def _imaging(hospital: str, patient_url: str, key: str, exam: tuple[str, ...], days_ago: int) -> list[dict[str, Any]]:
    loinc, display, modality, site, site_display, conclusion = exam
    sid, rid = f"{hospital.lower()}-s-{key}", f"{hospital.lower()}-r-{key}"
    study_url = _uuid(hospital, "study", key)
    study = {
        "resourceType": "ImagingStudy",
        "id": sid,
        "status": "available",
        "subject": {"reference": patient_url},
        "started": _when(days_ago, 9),
        "numberOfSeries": 1,
        "numberOfInstances": 120 if modality == "CT" else 2,
        "description": display,
        "series": [
            {
                "uid": "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, study_url).int),
                "modality": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": modality},
                "bodySite": {"system": "http://snomed.info/sct", "code": site, "display": site_display},
            }
        ],
    }
    report = {
        "resourceType": "DiagnosticReport",
        "id": rid,
        "status": "final",
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD", "display": "Radiology"}
                ]
            }
        ],
        "code": {"coding": [{"system": LOINC, "code": loinc, "display": display}]},
        "subject": {"reference": patient_url},
        "effectiveDateTime": _when(days_ago, 9),
        "issued": _when(days_ago, 15),
        "imagingStudy": [{"reference": study_url}],
        "conclusion": conclusion,
    }
    return [
        {"fullUrl": study_url, "resource": study, "request": {"method": "PUT", "url": f"ImagingStudy/{sid}"}},
        {
            "fullUrl": _uuid(hospital, "report", key),
            "resource": report,
            "request": {"method": "PUT", "url": f"DiagnosticReport/{rid}"},
        },
    ]


def hospital_bundle(hospital: str, seed: int) -> dict[str, Any]:
    """One hospital's transaction: every demo resident as its patient, 6-9 results each over 540 days."""
    rng = random.Random(f"{hospital}:{seed}")
    entries: list[dict[str, Any]] = []
    codes = sorted(LAB)
    for idx, r in enumerate(RESIDENTS):
        patient = _patient(hospital, r, idx)
        entries.append(patient)
        url = patient["fullUrl"]
        for n in range(rng.randint(5, 8)):
            code = rng.choice(codes)
            days_ago = rng.choice((1, 2, 3, 5, 10, 20, 45, 80, 120, 200, 365, 540))
            key = f"{idx}-{n}"
            entries.append(_observation(hospital, url, key, (code, *LAB[code]), days_ago, "final"))
        if idx % 3 == 0:
            exam = IMAGING[idx % len(IMAGING)]
            entries += _imaging(hospital, url, f"{idx}", exam, rng.choice((7, 25, 60, 150)))
    if hospital == HOSPITALS[0][0]:  # Chongqing's first hospital: the one test the catalogue does not hold
        entries.append(_observation(hospital, entries[0]["fullUrl"], "vitd", NOT_IN_CATALOGUE, 4, "final"))
        entries.append(
            _observation(hospital, entries[0]["fullUrl"], "prelim", ("2345-7", *LAB["2345-7"]), 1, "preliminary")
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def clinic_bundle() -> dict[str, Any]:
    """The private clinic: one glucose result for the first demo resident (a private 一级 clinic is not eligible)."""
    patient = _patient(CLINIC[0], RESIDENTS[0], 0)
    obs = _observation(CLINIC[0], patient["fullUrl"], "0-0", ("2345-7", *LAB["2345-7"]), 2, "final")
    return {"resourceType": "Bundle", "type": "transaction", "entry": [patient, obs]}


async def _loaded(svc: Services, hospital: str) -> bool:
    async with svc.db.reader() as s:
        q = (
            select(StoredResource.id)
            .join(Institution, Institution.id == StoredResource.institution_id)
            .where(Institution.code == hospital, StoredResource.resource_type == "Patient")
            .limit(1)
        )
        return (await s.execute(q)).first() is not None


async def load(svc: Services) -> dict[str, int]:
    """Idempotent: a hospital whose demo patients are stored already is skipped."""
    async with svc.db.uow() as uow:
        code, name, province, city, level, ownership = CLINIC
        await members.upsert(
            uow,
            members.NewInstitution(
                code, name, "hospital", province, city, level, ownership, participation_since=dt.date(2024, 1, 1)
            ),
        )
        await uow.commit()
    stored = 0
    bundles = [(code, hospital_bundle(code, i)) for i, (code, *_) in enumerate(HOSPITALS)]
    bundles.append((CLINIC[0], clinic_bundle()))
    for code, bundle in bundles:
        if await _loaded(svc, code):
            continue
        result = await ingest_bundle(svc, bundle, institution=code, actor=ACTOR)
        if not result.stored:
            raise RuntimeError(f"the demo bundle of {code} was refused: {result.issues()[:3]}")
        stored += sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient")
    return {"health results": stored}
