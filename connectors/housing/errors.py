"""Refusals of the housing context, each with a stable code."""

from __future__ import annotations

from federation.errors import Forbidden, NotFound


class ConsentRequired(Forbidden):
    code = "housing.consent_required"
    title = "The resident's consent is required"


class NoHousingSystem(NotFound):
    code = "housing.no_system"
    title = "No fund centre is connected"


class NoFundAccount(NotFound):
    code = "housing.no_fund_account"
    title = "The fund centre has no account for this person"


class CertificateNotFound(NotFound):
    code = "housing.certificate_not_found"
    title = "No such certificate"
