"""The CapabilityStatement served at ``/fhir/metadata``: exactly the interactions, search parameters, includes and
operations ``health.fhir.rest`` implements, nothing more.

``fhirVersion`` is 4.0.1: what this endpoint builds (Bundle, Patient, OperationOutcome, this statement) uses R4
elements only, and the results it serves are the R4 resources hospitals sent (Observation, DiagnosticReport,
ImagingStudy and Provenance are the same in R4 and R4B, whose models the ingest validates them with).
"""

from __future__ import annotations

from typing import Any

from health.fhir.search import DEFAULT_COUNT, MAX_COUNT, MAX_LASTN, RECOGNITION_SYSTEM, VERDICT_URL

FHIR_VERSION = "4.0.1"
RELEASED = "2026-12-04"
SEARCH_PARAM_DEFS = "http://hl7.org/fhir/SearchParameter"

_RESULT_PARAMS = [
    ("patient", "reference", "clinical-patient", "<id>, Patient/<id> or <base>/Patient/<id>; one patient per search"),
    ("subject", "reference", "{type}-subject", "as patient"),
    ("category", "token", "{type}-category", "laboratory, imaging (observation-category or v2-0074 codes)"),
    ("code", "token", "clinical-code", "system|code, code, |code or system|; comma-separated alternatives"),
    (
        "date",
        "date",
        "clinical-date",
        "effective time; prefixes eq (default), ge, gt, le, lt; partial dates (2024, 2024-03) cover their span; "
        "no zone means China Standard Time (+08:00)",
    ),
    ("_lastUpdated", "date", "Resource-lastUpdated", "as date, on when we last stored the resource"),
    ("status", "token", "{type}-status", "comma-separated alternatives"),
]


def _params(rtype: str) -> list[dict[str, Any]]:
    out = []
    for name, kind, definition, doc in _RESULT_PARAMS:
        out.append(
            {
                "name": name,
                "definition": f"{SEARCH_PARAM_DEFS}/{definition.format(type=rtype)}",
                "type": kind,
                "documentation": doc,
            }
        )
    return out


_PAGING = (
    f"_sort: date, -date (default), _lastUpdated or -_lastUpdated. _count: 0 to {MAX_COUNT} (default "
    f"{DEFAULT_COUNT}; 0 returns the total only). Pages are keyset pages: follow the Bundle's next, previous and "
    "first links as given. Doctors and API keys must name the patient; a resident's searches are their own. "
    "Search by GET or by POST [type]/_search (form-encoded). Withdrawn (entered-in-error) resources are never "
    f"returned by search; their read answers 410. Each result carries its recognition verdict: meta.tag in "
    f"{RECOGNITION_SYSTEM} (HR or not-recognised) and the extension {VERDICT_URL}."
)

_READ = {"code": "read"}
_SEARCH = {"code": "search-type"}


def statement(base: str, *, bundle_ingest: bool = False, ndjson_import: bool = False) -> dict[str, Any]:
    """The CapabilityStatement for the endpoint at ``base``. ``bundle_ingest`` and ``ndjson_import``: the
    ingest's ``POST /fhir`` (transaction and batch Bundles) and ``POST /fhir/$import`` are mounted."""
    resources: list[dict[str, Any]] = [
        {
            "type": "Patient",
            "documentation": (
                "One Patient per person of the federation (id = the person id); identifiers are shown masked. "
                "Find a patient by identifier with POST Patient/_search, form-encoded identifier=system|value "
                "(urn:oid:2.16.156.10011.1.3 for the resident ID number, "
                "https://twincity.example/fhir/sid/social-security-card for the social-security card); "
                "identifiers are refused in URLs."
            ),
            "interaction": [_READ, _SEARCH],
            "versioning": "no-version",
            "readHistory": False,
            "updateCreate": False,
            "searchParam": [
                {
                    "name": "_id",
                    "definition": f"{SEARCH_PARAM_DEFS}/Resource-id",
                    "type": "token",
                    "documentation": "one id",
                },
                {
                    "name": "identifier",
                    "definition": f"{SEARCH_PARAM_DEFS}/Patient-identifier",
                    "type": "token",
                    "documentation": "POST Patient/_search only (form body); one identifier",
                },
            ],
        },
        {
            "type": "Observation",
            "documentation": _PAGING,
            "interaction": [_READ, _SEARCH],
            "versioning": "versioned",
            "readHistory": False,
            "updateCreate": False,
            "searchRevInclude": ["Provenance:target"],
            "searchParam": _params("Observation"),
            "operation": [
                {
                    "name": "lastn",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Observation-lastn",
                    "documentation": (
                        f"patient (or subject), category, code, max (1 to {MAX_LASTN}, default 1): the max most "
                        "recent Observations of each code"
                    ),
                }
            ],
        },
        {
            "type": "DiagnosticReport",
            "documentation": _PAGING,
            "interaction": [_READ, _SEARCH],
            "versioning": "versioned",
            "readHistory": False,
            "updateCreate": False,
            "searchInclude": ["DiagnosticReport:result"],
            "searchRevInclude": ["Provenance:target"],
            "searchParam": _params("DiagnosticReport"),
        },
        {
            "type": "ImagingStudy",
            "documentation": "read only; carries its recognition verdict as Observation does",
            "interaction": [_READ],
            "versioning": "versioned",
            "readHistory": False,
            "updateCreate": False,
        },
        {
            "type": "Provenance",
            "documentation": "read only; found with _revinclude=Provenance:target",
            "interaction": [_READ],
            "versioning": "versioned",
            "readHistory": False,
            "updateCreate": False,
        },
    ]
    rest: dict[str, Any] = {
        "mode": "server",
        "documentation": "Results shared between the member hospitals of the Chengdu-Chongqing federation.",
        "security": {
            "cors": False,
            "service": [
                {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/restful-security-service", "code": "OAuth"}
                    ],
                    "text": "Bearer token",
                }
            ],
            "description": (
                "Authorization: Bearer <token> (a doctor's or resident's token, or a member system's API key with "
                "scope health.read). A patient's data is released only with the patient's consent for the "
                "reader's institution, an emergency override, or to the patient; every attempt is audited."
            ),
        },
        "resource": resources,
    }
    if bundle_ingest:
        rest["interaction"] = [
            {"code": "transaction", "documentation": "POST a transaction Bundle of results to the base"},
            {"code": "batch", "documentation": "POST a batch Bundle of results to the base"},
        ]
    if ndjson_import:
        rest["operation"] = [
            {
                "name": "import",
                "definition": "https://twincity.example/fhir/OperationDefinition/import",
                "documentation": "POST NDJSON (one resource a line) to [base]/$import: loaded as a job",
            }
        ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": RELEASED,
        "publisher": "twincity",
        "kind": "instance",
        "software": {"name": "twincity"},
        "implementation": {"description": "twincity FHIR endpoint", "url": base},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [rest],
    }
