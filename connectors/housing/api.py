"""Housing over HTTP: the published signing keys, checking a certificate by id (public: the answer names no one),
and the resident's summary and certificates."""

from __future__ import annotations

import datetime as dt
from typing import Any

from aiohttp import web
from pydantic import Field

from connectors.housing import service, signing
from federation.app import client_address, principal, services
from federation.errors import Forbidden
from federation.web.routing import PUBLIC, RESIDENT, Routes
from federation.web.schema import Input, Output

routes = Routes("housing")


class Jwk(Output):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str


class KeySet(Output):
    keys: list[Jwk]


class CertificateCheck(Output):
    id: str
    valid: bool
    status: str = Field(description="valid, expired, revoked, not_yet_valid, bad_signature, unknown_key, malformed")
    detail: str
    kid: str
    fund_centre: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    sha256: str = Field(description="of the document's canonical bytes, to compare with a copy")


class CertificateIn(Input):
    fund_centre: str = Field(min_length=1, max_length=32, description="the fund centre's member code, e.g. CQHF")
    account_number: str | None = Field(default=None, min_length=1, max_length=64)


class SignedDocument(Output):
    payload: dict[str, Any]
    kid: str
    alg: str
    signature: str = Field(description="Ed25519 over the payload's canonical JSON, url-safe base64")


class DepositsSummary(Output):
    deposits: int
    months: int
    total: str
    from_month: str | None
    to_month: str | None


class Account(Output):
    account_number: str
    status: str
    employer: str
    opened_on: dt.date
    deposit_base: str
    personal_rate: str
    employer_rate: str
    monthly_deposit: str
    balance: str
    first_month: str
    last_month: str
    months_deposited: int
    recent: DepositsSummary | None


class CreditEntry(Output):
    city: str
    kind: str
    recorded_on: dt.date
    resolved: bool


class Credit(Output):
    level: str
    records: list[CreditEntry]


class Centre(Output):
    connector: str
    member_code: str
    status: str = Field(description="ok, not_consented or unavailable")
    error_code: str | None
    accounts: list[Account]
    credit: Credit | None


class Rental(Output):
    connector: str
    application_no: str
    city: str
    estate: str
    status: str
    queue_position: int | None
    submitted_on: dt.date
    updated_at: dt.datetime


class HousingOut(Output):
    centres: list[Centre]
    rental_applications: list[Rental]


@routes.get(
    "/api/v1/housing/keys",
    access=PUBLIC,
    response=KeySet,
    summary="The public keys deposit certificates are signed with (JWK, Ed25519), for checking them offline",
)
async def keys(request: web.Request) -> dict[str, Any]:
    return service.published_keys(services(request))


@routes.get(
    "/api/v1/housing/certificates/{certificate_id}/verify",
    access=PUBLIC,
    response=CertificateCheck,
    summary="Check an issued deposit certificate: genuine, expired or revoked (names no person)",
    errors=(404,),
)
async def verify(request: web.Request) -> dict[str, Any]:
    return await service.check_certificate(
        services(request),
        request.match_info["certificate_id"],
        actor=principal(request).actor,
        client_address=client_address(request),
    )


def _person(request: web.Request) -> str:
    who = principal(request)
    if who.person_id is None:
        raise Forbidden("this account is not linked to a person")
    return who.person_id


@routes.post(
    "/api/v1/me/housing/certificates",
    access=RESIDENT,
    body=CertificateIn,
    response=SignedDocument,
    status=201,
    summary="A signed deposit certificate (缴存证明) for my fund account (with my consent housing_summary)",
    errors=(403, 404, 422, 502, 503),
)
async def issue(request: web.Request, body: CertificateIn) -> web.Response:
    document = await service.issue_certificate(
        services(request),
        _person(request),
        fund_centre=body.fund_centre,
        account_number=body.account_number,
        actor=principal(request).actor,
        client_address=client_address(request),
    )
    location = f"/api/v1/housing/certificates/{document['payload']['id']}/verify"
    return web.Response(
        status=201,
        body=signing.document_bytes(document),
        content_type="application/json",
        charset="utf-8",
        headers={"Location": location},
    )


@routes.get(
    "/api/v1/me/housing",
    access=RESIDENT,
    response=HousingOut,
    summary="My fund accounts, deposits, rental applications and rental credit (with my consent housing_summary)",
    errors=(403, 404),
)
async def mine(request: web.Request) -> dict[str, Any]:
    return await service.resident_summary(
        services(request), _person(request), actor=principal(request).actor, client_address=client_address(request)
    )
