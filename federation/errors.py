"""The error family every context derives from: a stable code, an HTTP status, a human sentence."""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """A refusal the caller can act on. ``code`` is stable and documented; ``detail`` is for people."""

    code: ClassVar[str] = "error"
    status: ClassVar[int] = 400
    title: ClassVar[str] = "Request refused"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFound(DomainError):
    code = "not_found"
    status = 404
    title = "Not found"


class Conflict(DomainError):
    code = "conflict"
    status = 409
    title = "Conflict"


class InvalidInput(DomainError):
    code = "invalid_input"
    status = 422
    title = "Invalid input"


class Unauthenticated(DomainError):
    code = "unauthenticated"
    status = 401
    title = "Authentication required"


class Forbidden(DomainError):
    code = "forbidden"
    status = 403
    title = "Forbidden"


class TooManyRequests(DomainError):
    code = "too_many_requests"
    status = 429
    title = "Too many requests"
