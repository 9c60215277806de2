"""Every route, every kind of caller: the answer is what this table says (allowed, 401 or 403).

The table is the specification. A route the application serves that has no row
here fails the test, so no route can be added without deciding who may call it.
"""

from __future__ import annotations

import re

import pytest

from federation.accounts.service import SCOPES, create_api_key
from tests.conftest import token_for

ALL = {"anonymous", "resident", "librarian", "doctor", "admin", "apikey"}
PEOPLE = {"resident", "librarian", "doctor", "admin"}
STAFF = {"librarian", "doctor", "admin"}

EXPECTED: dict[tuple[str, str], set[str]] = {
    ("GET", "/healthz"): ALL,
    ("GET", "/readyz"): ALL,
    ("GET", "/metrics"): ALL,
    ("GET", "/api/openapi.json"): ALL,
    ("GET", "/"): ALL,
    ("GET", "/static/{name}"): ALL,
    ("POST", "/api/v1/auth/token"): ALL,
    ("POST", "/api/v1/auth/session"): ALL,
    ("GET", "/api/v1/auth/session"): ALL,
    ("DELETE", "/api/v1/auth/session"): PEOPLE,
    ("GET", "/api/v1/me"): PEOPLE | {"apikey"},
    ("POST", "/api/v1/accounts/staff"): {"admin"},
    ("POST", "/api/v1/accounts/residents"): {"admin", "librarian"},
    ("GET", "/api/v1/members"): ALL,
    ("GET", "/api/v1/members/{code}"): ALL,
    ("POST", "/api/v1/members"): {"admin"},
    ("POST", "/api/v1/members/{code}/service-points"): {"admin"},
    ("POST", "/api/v1/identity/checks"): STAFF | {"apikey"},
    ("POST", "/api/v1/identity/persons"): STAFF | {"apikey"},
    ("GET", "/api/v1/identity/persons/{person_id}"): STAFF | {"apikey"},
    ("POST", "/api/v1/identity/lookups"): STAFF | {"apikey"},
    ("POST", "/api/v1/identity/persons/{person_id}/identifiers"): STAFF | {"apikey"},
    ("POST", "/api/v1/identity/credential-status"): {"admin", "apikey"},
    ("POST", "/api/v1/identity/crossrefs"): STAFF | {"apikey"},
    ("POST", "/api/v1/identity/merges"): {"admin"},
    ("POST", "/api/v1/identity/merges/{merge_id}/undo"): {"admin"},
    ("GET", "/api/v1/identity/reviews"): {"admin"},
    ("POST", "/api/v1/identity/reviews/{review_id}/resolution"): {"admin"},
    ("GET", "/api/v1/me/person"): {"resident"},
    ("GET", "/api/v1/me/consents"): {"resident"},
    ("POST", "/api/v1/me/consents"): {"resident"},
    ("DELETE", "/api/v1/me/consents/{consent_id}"): {"resident"},
    ("POST", "/api/v1/consents/checks"): STAFF | {"apikey"},
    ("GET", "/api/v1/me/access-log"): {"resident"},
    ("GET", "/api/v1/audit/entries"): {"admin"},
    ("GET", "/api/v1/audit/verification"): {"admin"},
    ("GET", "/api/v1/jobs/{job_id}"): STAFF | {"apikey"},
    ("POST", "/api/v1/health/patient-lookups"): {"doctor", "apikey"},
    ("GET", "/api/v1/health/patients/{person_id}/prior-results"): {"doctor", "apikey"},
    ("GET", "/api/v1/me/results"): {"resident"},
    ("POST", "/api/v1/health/patients/{person_id}/overrides"): {"doctor"},
    ("GET", "/api/v1/health/overrides"): {"admin"},
    ("POST", "/api/v1/health/overrides/{override_id}/review"): {"admin"},
    ("POST", "/api/v1/health/decisions"): {"doctor"},
    ("GET", "/api/v1/health/figures"): {"admin"},
    ("GET", "/api/v1/health/audit-events"): {"resident", "admin"},
    ("GET", "/api/v1/health/catalogue/items"): ALL,
    ("GET", "/api/v1/health/catalogue/items/{code}"): ALL,
    ("POST", "/api/v1/health/catalogue/items"): {"admin"},
    ("POST", "/api/v1/health/catalogue/items/{code}/versions"): {"admin"},
    ("POST", "/api/v1/health/catalogue/items/{code}/removal"): {"admin"},
    ("POST", "/api/v1/health/catalogue/local-codes"): {"admin", "apikey"},
    ("GET", "/api/v1/health/hospitals/{code}/qc-certifications"): STAFF,
    ("POST", "/api/v1/health/hospitals/{code}/qc-certifications"): {"admin"},
    ("POST", "/api/v1/jobs"): {"admin"},
    ("GET", "/api/v1/catalog/search"): ALL,
    ("GET", "/api/v1/catalog/works/{work_id}"): ALL,
    ("GET", "/api/v1/catalog/works/{work_id}/cluster-log"): {"librarian", "admin"},
    ("POST", "/api/v1/catalog/records/{record_id}/split"): {"admin"},
    ("GET", "/api/v1/catalog/records/{record_id}/export"): ALL,
    ("POST", "/api/v1/catalog/imports"): {"librarian", "admin", "apikey"},
    ("POST", "/api/v1/circulation/checkouts"): {"librarian"},
    ("POST", "/api/v1/circulation/checkins"): {"librarian"},
    ("GET", "/api/v1/circulation/transits"): {"librarian"},
    ("POST", "/api/v1/circulation/transits/{transit_id}/receipt"): {"librarian"},
    ("POST", "/api/v1/circulation/loans/{loan_id}/renewals"): {"librarian", "resident"},
    ("GET", "/api/v1/me/loans"): {"resident"},
    ("POST", "/api/v1/circulation/requests"): {"librarian", "resident"},
    ("DELETE", "/api/v1/circulation/requests/{request_id}"): {"librarian", "resident"},
    ("GET", "/api/v1/circulation/pull-list"): {"librarian"},
    ("GET", "/api/v1/me/requests"): {"resident"},
    ("GET", "/api/v1/circulation/reports/loans-by-library"): {"librarian", "admin"},
    ("GET", "/api/v1/circulation/reports/cross-city-loans"): {"librarian", "admin"},
    ("GET", "/api/v1/circulation/reports/transits"): {"librarian", "admin"},
    ("GET", "/api/v1/circulation/reports/request-fill-time"): {"librarian", "admin"},
    ("POST", "/api/v1/circulation/reader-blocks"): {"librarian", "admin"},
    ("POST", "/api/v1/circulation/item-declarations"): {"librarian", "admin"},
    ("GET", "/api/v1/circulation/policies/federation"): {"librarian", "admin"},
    ("PUT", "/api/v1/circulation/policies/federation"): {"admin"},
    ("GET", "/api/v1/circulation/policies/libraries/{library}"): {"librarian", "admin"},
    ("PUT", "/api/v1/circulation/policies/libraries/{library}"): {"librarian", "admin"},
    ("PUT", "/api/v1/circulation/policies/libraries/{library}/rules/{reader_category}/{item_type}"): {
        "librarian",
        "admin",
    },
    ("DELETE", "/api/v1/circulation/policies/libraries/{library}/rules/{reader_category}/{item_type}"): {
        "librarian",
        "admin",
    },
    ("GET", "/api/v1/circulation/libraries/{library}/closed-days"): ALL,
    ("POST", "/api/v1/circulation/libraries/{library}/closed-days"): {"librarian", "admin"},
    ("DELETE", "/api/v1/circulation/libraries/{library}/closed-days/{day_id}"): {"librarian", "admin"},
    ("GET", "/api/v1/me/fines"): {"resident"},
    ("POST", "/api/v1/circulation/fines/{fine_id}/payment"): {"librarian", "admin"},
    ("POST", "/api/v1/circulation/fines/{fine_id}/waiver"): {"librarian", "admin"},
    ("GET", "/api/v1/me/inbox"): {"resident"},
    ("POST", "/api/v1/me/inbox/{message_id}/read"): {"resident"},
    ("GET", "/oai"): ALL,
    ("POST", "/oai"): ALL,
    ("GET", "/sru"): ALL,
    ("GET", "/fhir/metadata"): ALL,
    ("GET", "/fhir/Patient"): {"doctor", "resident", "apikey"},
    ("POST", "/fhir/Patient/_search"): {"doctor", "resident", "apikey"},
    ("GET", "/fhir/Patient/{id}"): {"doctor", "resident", "apikey"},
    ("GET", "/fhir/Observation"): {"doctor", "resident", "apikey"},
    ("POST", "/fhir/Observation/_search"): {"doctor", "resident", "apikey"},
    ("GET", "/fhir/Observation/$lastn"): {"doctor", "resident", "apikey"},
    ("GET", "/fhir/Observation/{id}"): {"doctor", "resident", "apikey"},
    ("GET", "/fhir/DiagnosticReport"): {"doctor", "resident", "apikey"},
    ("POST", "/fhir/DiagnosticReport/_search"): {"doctor", "resident", "apikey"},
    ("GET", "/fhir/DiagnosticReport/{id}"): {"doctor", "resident", "apikey"},
    ("GET", "/fhir/ImagingStudy/{id}"): {"doctor", "resident", "apikey"},
    ("GET", "/fhir/Provenance/{id}"): {"doctor", "resident", "apikey"},
    ("POST", "/fhir"): {"apikey"},
    ("POST", "/fhir/$import"): {"apikey"},
    ("GET", "/api/v1/connectors"): {"admin"},
    ("POST", "/api/v1/connectors/{name}/syncs"): {"admin"},
    ("POST", "/api/v1/social-security/card-verifications"): {"resident", "librarian", "admin"},
    ("GET", "/api/v1/me/social-security"): {"resident"},
    ("GET", "/api/v1/housing/keys"): ALL,
    ("GET", "/api/v1/housing/certificates/{certificate_id}/verify"): ALL,
    ("POST", "/api/v1/me/housing/certificates"): {"resident"},
    ("GET", "/api/v1/me/housing"): {"resident"},
    ("POST", "/api/v1/me/transport/cards"): {"resident"},
    ("GET", "/api/v1/me/transport"): {"resident"},
}


def served_routes(app) -> list[tuple[str, str]]:
    out = []
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        out.append((route.method, route.resource.canonical))
    return sorted(set(out))


async def callers(client, svc) -> dict[str, dict[str, str]]:
    from federation.demo import RESIDENTS

    headers = {"anonymous": {}}
    headers["resident"] = await token_for(client, RESIDENTS[0].id_number)
    for role, user in (("librarian", "librarian@CQL"), ("doctor", "doctor@SCH1"), ("admin", "admin@federation")):
        headers[role] = await token_for(client, user)
    async with svc.db.uow() as uow:
        _, secret = await create_api_key(uow, svc, "CQH1", sorted(SCOPES), actor="test")
        await uow.commit()
    headers["apikey"] = {"Authorization": f"Bearer {secret}"}
    return headers


def test_every_served_route_has_a_row(tmp_path):
    from federation.app import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings(tmp_path), run_background=False)
    served = set(served_routes(app))
    missing = served - set(EXPECTED)
    assert not missing, f"routes without an access row in this table: {sorted(missing)}"
    stale = set(EXPECTED) - served
    assert not stale, f"rows for routes the application does not serve: {sorted(stale)}"


async def test_route_role_table(client, demo):
    headers = await callers(client, demo)
    failures = []
    for method, path in served_routes(client.app):
        allowed = EXPECTED[(method, path)]
        url = re.sub(r"\{[^}]+\}", "unknown-id", path)
        for who, hdrs in headers.items():
            if (method, path) == ("DELETE", "/api/v1/auth/session"):
                continue  # checked below: logging out must not spend the tokens the loop still needs
            kwargs = {"headers": hdrs}
            if method in ("POST", "PUT", "PATCH"):
                kwargs["json"] = {}
            resp = await client.request(method, url, **kwargs)
            status = resp.status
            if who in allowed:
                ok = status not in (401, 403) and status < 500
            else:
                ok = status == (401 if who == "anonymous" else 403)
                # the FHIR endpoint tells its errors as OperationOutcome
                expected_type = "application/fhir+json" if path.startswith("/fhir") else "application/problem+json"
                if ok and resp.content_type != expected_type:
                    ok = False
            if not ok:
                failures.append(f"{method} {path} as {who}: {status} ({'allowed' if who in allowed else 'denied'})")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("who", ["anonymous", "resident", "librarian", "doctor", "admin", "apikey"])
async def test_logout_rule(client, demo, who):
    headers = await callers(client, demo)
    resp = await client.delete("/api/v1/auth/session", headers=headers[who])
    allowed = EXPECTED[("DELETE", "/api/v1/auth/session")]
    if who in allowed:
        assert resp.status == 204
    else:
        assert resp.status == (401 if who == "anonymous" else 403)
