"""The connectors' error family: every way an outside system can fail us, each with a stable code.

A partner's failure is never a crash of the service: it ends as one of these, which the problem middleware renders
as problem+json and a sync job records as the connector's last error. Messages name the connector and what went
wrong, never a payload (it may carry personal data).
"""

from __future__ import annotations

from federation.errors import Conflict, DomainError, InvalidInput, NotFound


class ConnectorError(DomainError):
    """The outside system did not give a usable answer."""

    code = "connectors.error"
    status = 502
    title = "An outside system failed"


class ConnectorUnreachable(ConnectorError):
    """Connect errors, timeouts, 502/503/504 and 429 that outlived the retries: worth trying again later."""

    code = "connectors.unreachable"
    title = "An outside system is unreachable"


class CircuitOpen(ConnectorError):
    """Too many consecutive failures: calls are refused without trying until the cool-down has passed."""

    code = "connectors.circuit_open"
    status = 503
    title = "An outside system is paused after repeated failures"


class BadResponse(ConnectorError):
    """HTML for JSON, truncated JSON, wrong types, a body over the size cap: the partner's payload is unusable."""

    code = "connectors.bad_response"
    title = "An outside system answered with an unusable payload"


class PartnerRefused(ConnectorError):
    """A 4xx from the partner (other than 429): our request or our credentials were refused; retrying won't help."""

    code = "connectors.refused"
    title = "An outside system refused the request"


class ConnectorNotFound(NotFound):
    code = "connectors.not_found"
    title = "No such connector"


class InvalidConnector(InvalidInput):
    code = "connectors.invalid"


class ConnectorDisabled(Conflict):
    code = "connectors.disabled"


class WatermarkMoved(Conflict):
    """Another run advanced the watermark since this one read it: this run's batch is rolled back, not applied twice."""

    code = "connectors.watermark_moved"
