"""Housing on the identity layer: the resident's summary (fund accounts, deposits, rental applications, the shared
credit record), deposit certificates (issued, stored encrypted, checked by id), and the rental applications' feed.

Partner calls happen with no unit of work open; each change commits in one unit of work with its audit entries.
ID numbers go to partners in JSON bodies and into signed documents the resident asked for, nowhere else.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import uuid
from typing import Any

from sqlalchemy import select

from connectors.framework import service as connectors
from connectors.framework.errors import ConnectorError
from connectors.framework.service import LoadedConnector
from connectors.housing import signing
from connectors.housing.adapter import HttpHousing
from connectors.housing.errors import CertificateNotFound, ConsentRequired, NoFundAccount, NoHousingSystem
from connectors.housing.models import DepositCertificate, RentalApplication
from connectors.housing.schemas import FundAccount, RentalChange
from federation.audit.service import Record
from federation.consent.service import Purpose, holding
from federation.db import UnitOfWork, utcnow
from federation.identity import service as identity
from federation.identity.errors import InvalidIdentifier, PersonNotFound
from federation.identity.models import Identifier, IdentifierType
from federation.members import service as members
from federation.services import Services
from federation.settings import Environment

KIND = "housing"
KEY_KEY = "housing.signing_key"
POLICY_KEY = "housing.certificate_policy"
DOCUMENT_TYPE = "housing.deposit_certificate"


@dataclasses.dataclass(frozen=True)
class CertificatePolicy:
    """How long a certificate is valid, how much history it shows, who issues it: data a test or a deployment
    swaps (``svc.extras[POLICY_KEY]``)."""

    valid_days: int = 90
    history_months: int = 12
    issuer_code: str = "FEDERATION"
    issuer_name: str = "川渝便捷生活联盟运营中心"


def policy(svc: Services) -> CertificatePolicy:
    found: CertificatePolicy = svc.extras.get(POLICY_KEY) or CertificatePolicy()
    return found


def signing_key(svc: Services) -> signing.SigningKey:
    """The process's signing key, read (or, outside production, made) on first use."""
    key: signing.SigningKey | None = svc.extras.get(KEY_KEY)
    if key is None:
        production = svc.settings.env is Environment.PRODUCTION
        key = signing.load_or_create(svc.settings.data_dir, production=production)
        svc.extras[KEY_KEY] = key
    return key


def published_keys(svc: Services) -> dict[str, Any]:
    return signing_key(svc).jwks()


async def _systems(svc: Services) -> list[LoadedConnector]:
    systems = await connectors.of_kind(svc, KIND)
    if not systems:
        raise NoHousingSystem("no fund centre is connected")
    return systems


async def _consented(svc: Services, person_id: str, systems: list[LoadedConnector]) -> list[LoadedConnector]:
    async with svc.db.reader() as s:
        return [c for c in systems if await holding(s, person_id, Purpose.HOUSING_SUMMARY, c.member_code)]


async def _id_number_of(svc: Services, person_id: str) -> tuple[str, str]:
    """The person's name and clear ID number (for a partner call or the certificate they asked for)."""
    async with svc.db.reader() as s:
        person = await identity.get_person(s, person_id)
        q = select(Identifier).where(
            Identifier.person_id == person.id, Identifier.type == IdentifierType.ID_NUMBER.value
        )
        ident = (await s.execute(q)).scalars().first()
        name = person.name
    if ident is None:
        raise PersonNotFound("no ID number is linked to this person")
    return name, identity.reveal(svc.cipher, ident)


# --- the resident's summary ----------------------------------------------------------------------------------------


async def resident_summary(
    svc: Services, person_id: str, *, actor: str, client_address: str | None = None
) -> dict[str, Any]:
    """Each consented centre's accounts with a deposits summary and the shared rental credit record (asked live),
    and the rental applications the feed brought; audited once, naming what was asked of whom."""
    systems = await _systems(svc)
    allowed = await _consented(svc, person_id, systems)
    if not allowed:
        raise ConsentRequired("grant the consent 'housing_summary' to see your housing summary")
    _, number = await _id_number_of(svc, person_id)
    months = policy(svc).history_months
    centres: list[dict[str, Any]] = []
    for system in systems:
        entry: dict[str, Any] = {
            "connector": system.name,
            "member_code": system.member_code,
            "status": "ok",
            "error_code": None,
            "accounts": [],
            "credit": None,
        }
        centres.append(entry)
        if system not in allowed:
            entry["status"] = "not_consented"
            continue
        try:
            async with connectors.open_client(svc, system.name) as client:
                port = HttpHousing(client)
                accounts = await port.fund_accounts(number) or []
                for account in accounts:
                    history = await port.deposits(account.account_number, months)
                    entry["accounts"].append(
                        {**account.model_dump(mode="json"), "recent": history.summary() if history else None}
                    )
                entry["credit"] = (await port.rental_credit(number)).model_dump(mode="json")
        except ConnectorError as e:
            entry.update(status="unavailable", error_code=e.code, accounts=[], credit=None)
    codes = {c.name for c in allowed}
    async with svc.db.reader() as s:
        q = (
            select(RentalApplication)
            .where(RentalApplication.person_id == person_id, RentalApplication.connector.in_(codes))
            .order_by(RentalApplication.submitted_on, RentalApplication.application_no)
        )
        rentals = [
            {
                "connector": a.connector,
                "application_no": a.application_no,
                "city": a.city,
                "estate": a.estate,
                "status": a.status,
                "queue_position": a.queue_position,
                "submitted_on": a.submitted_on,
                "updated_at": a.partner_updated_at,
            }
            for a in (await s.execute(q)).scalars()
        ]
    async with svc.db.uow() as uow:
        await svc.audit(
            uow,
            Record(
                action="housing.summary_read",
                actor=actor,
                subject_person_id=person_id,
                purpose=Purpose.HOUSING_SUMMARY.value,
                client_address=client_address,
                details={
                    "centres": {c["connector"]: c["status"] for c in centres},
                    "rental_applications": len(rentals),
                },
            ),
        )
        await uow.commit()
    return {"centres": centres, "rental_applications": rentals}


# --- deposit certificates ------------------------------------------------------------------------------------------


def certificate_context(certificate_id: str) -> str:
    """The associated data a certificate's document is encrypted with."""
    return f"housing-certificate:{certificate_id}"


def _pick(accounts: list[FundAccount], account_number: str | None) -> FundAccount:
    if account_number is not None:
        for a in accounts:
            if a.account_number == account_number.strip():
                return a
        raise NoFundAccount("the fund centre has no such account of yours")
    return sorted(accounts, key=lambda a: (a.status != "active", a.account_number))[0]


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).replace(microsecond=0).isoformat()


async def issue_certificate(
    svc: Services,
    person_id: str,
    *,
    fund_centre: str,
    account_number: str | None = None,
    actor: str,
    client_address: str | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """A signed deposit certificate (缴存证明) for the person's account at ``fund_centre`` (a member code), only
    with their consent ``housing_summary`` for that centre. The document is stored encrypted and audited by id."""
    systems = [c for c in await _systems(svc) if c.member_code == fund_centre.strip().upper()]
    if not systems:
        raise NoHousingSystem(f"no fund centre {fund_centre} is connected")
    system = systems[0]
    if not await _consented(svc, person_id, [system]):
        raise ConsentRequired(f"grant the consent 'housing_summary' to {system.member_code} to get a certificate")
    name, number = await _id_number_of(svc, person_id)
    rules = policy(svc)
    async with connectors.open_client(svc, system.name) as client:
        port = HttpHousing(client)
        accounts = await port.fund_accounts(number)
        if not accounts:
            raise NoFundAccount("the fund centre has no account for you")
        account = _pick(accounts, account_number)
        history = await port.deposits(account.account_number, rules.history_months)
    async with svc.db.reader() as s:
        centre = await members.get(s, system.member_code)
        centre_name = centre.name
    key = signing_key(svc)
    issued = (now or utcnow()).replace(microsecond=0)
    expires = issued + dt.timedelta(days=rules.valid_days)
    cert_id = uuid.uuid4().hex
    payload = {
        "type": DOCUMENT_TYPE,
        "version": 1,
        "id": cert_id,
        "issuer": {"code": rules.issuer_code, "name": rules.issuer_name},
        "issued_at": _iso(issued),
        "expires_at": _iso(expires),
        "holder": {"name": name, "id_number": number},
        "fund_centre": {"code": system.member_code, "name": centre_name},
        "account": account.model_dump(mode="json"),
        "recent_deposits": {"window_months": rules.history_months, **(history.summary() if history else {})},
    }
    document = signing.sign(payload, key)
    raw = signing.document_bytes(document)
    async with svc.db.uow() as uow:
        uow.session.add(
            DepositCertificate(
                id=cert_id,
                person_id=person_id,
                connector=system.name,
                member_code=system.member_code,
                kid=key.kid,
                issued_at=issued,
                expires_at=expires,
                digest=hashlib.sha256(raw).hexdigest(),
                document_enc=svc.cipher.encrypt(raw.decode("utf-8"), certificate_context(cert_id)),
                created_by=actor,
            )
        )
        await svc.audit(
            uow,
            Record(
                action="housing.certificate_issued",
                actor=actor,
                subject_person_id=person_id,
                purpose=Purpose.HOUSING_SUMMARY.value,
                client_address=client_address,
                details={
                    "certificate": cert_id,
                    "fund_centre": system.member_code,
                    "account": identity.mask("local", account.account_number),
                    "kid": key.kid,
                    "expires_at": _iso(expires),
                },
            ),
        )
        await uow.commit()
    return document


async def stored_document(svc: Services, certificate_id: str) -> tuple[DepositCertificate, bytes]:
    async with svc.db.reader() as s:
        row = await s.get(DepositCertificate, certificate_id) if len(certificate_id) <= 32 else None
    if row is None:
        raise CertificateNotFound("no certificate with this id")
    return row, svc.cipher.decrypt(row.document_enc, certificate_context(row.id)).encode("utf-8")


async def check_certificate(
    svc: Services, certificate_id: str, *, actor: str, client_address: str | None = None
) -> dict[str, Any]:
    """Check a stored certificate as any verifier would (signature with the published key, validity window) and
    whether it was revoked. The answer names no person; the check is audited for the holder's access log."""
    row, raw = await stored_document(svc, certificate_id)
    key = signing_key(svc)
    verdict = signing.verify(raw, {key.kid: key.public})
    status, detail = verdict.status, verdict.detail
    if row.revoked_at is not None and verdict.status in ("valid", "expired"):
        status, detail = "revoked", f"revoked at {_iso(row.revoked_at)}"
    async with svc.db.uow() as uow:
        await svc.audit(
            uow,
            Record(
                action="housing.certificate_checked",
                actor=actor,
                subject_person_id=row.person_id,
                client_address=client_address,
                details={"certificate": row.id, "status": status},
            ),
        )
        await uow.commit()
    return {
        "id": row.id,
        "valid": status == "valid",
        "status": status,
        "detail": detail,
        "kid": row.kid,
        "fund_centre": row.member_code,
        "issued_at": row.issued_at,
        "expires_at": row.expires_at,
        "sha256": row.digest,
    }


# --- the rental applications' feed --------------------------------------------------------------------------------


async def apply_rental_change(
    uow: UnitOfWork, svc: Services, connector: str, change: RentalChange, *, actor: str
) -> str:
    """Upsert one report; returns ``applied``, ``stale`` (a newer report is already here) or ``unknown_person``
    (nobody in the federation holds the ID number: nothing is stored)."""
    try:
        ident = await identity.find_identifier(
            uow.session, svc.cipher, identity.IdentifierInput(IdentifierType.ID_NUMBER, change.id_number)
        )
    except InvalidIdentifier:
        return "unknown_person"
    if ident is None:
        return "unknown_person"
    q = select(RentalApplication).where(
        RentalApplication.connector == connector, RentalApplication.application_no == change.application_no
    )
    row = (await uow.session.execute(q)).scalar_one_or_none()
    if row is not None and row.seq >= change.seq:
        return "stale"
    if row is None:
        row = RentalApplication(connector=connector, application_no=change.application_no)
        uow.session.add(row)
    row.person_id = ident.person_id
    row.city = change.city
    row.estate = change.estate
    row.status = change.status
    row.queue_position = change.queue_position
    row.submitted_on = change.submitted_on
    row.partner_updated_at = change.updated_at
    row.seq = change.seq
    await uow.session.flush()
    await svc.audit(
        uow,
        Record(
            action="housing.rental_application_synced",
            actor=actor,
            subject_person_id=ident.person_id,
            details={"connector": connector, "application": change.application_no, "status": change.status},
        ),
    )
    return "applied"
