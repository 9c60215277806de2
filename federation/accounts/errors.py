"""Errors of authentication and accounts."""

from __future__ import annotations

from federation.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound, Unauthenticated


class BadCredentials(Unauthenticated):
    code = "auth.bad_credentials"
    title = "Wrong username or password"


class InvalidToken(Unauthenticated):
    code = "auth.invalid_token"
    title = "Invalid or expired token"


class LoginThrottled(DomainError):
    code = "auth.throttled"
    status = 429
    title = "Too many failed logins"


class CsrfFailed(Forbidden):
    code = "auth.csrf_failed"
    title = "Missing or wrong CSRF token"


class AccountExists(Conflict):
    code = "accounts.exists"


class AccountNotFound(NotFound):
    code = "accounts.not_found"


class UnknownScope(InvalidInput):
    code = "accounts.unknown_scope"


class ApiKeyNotFound(NotFound):
    code = "accounts.api_key_not_found"
