"""Errors of the identity layer, each with a stable code."""

from __future__ import annotations

from federation.errors import Conflict, DomainError, InvalidInput, NotFound


class InvalidIdentifier(InvalidInput):
    code = "identity.invalid_identifier"


class PersonNotFound(NotFound):
    code = "identity.person_not_found"
    title = "No such person"


class UnknownCredential(NotFound):
    code = "identity.unknown_credential"
    title = "Credential not recognised"


class CredentialInactive(DomainError):
    code = "identity.credential_inactive"
    status = 403
    title = "Credential no longer valid"


class IdentifierTaken(Conflict):
    code = "identity.identifier_taken"
    title = "Identifier belongs to another person"


class ConflictingDemographics(InvalidInput):
    code = "identity.conflicting_demographics"


class MergeRefused(Conflict):
    code = "identity.merge_refused"


class ReviewClosed(Conflict):
    code = "identity.review_closed"
