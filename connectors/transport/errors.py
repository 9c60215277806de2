"""Refusals of the transport context, each with a stable code."""

from __future__ import annotations

from federation.errors import Conflict, Forbidden, InvalidInput, NotFound


class ConsentRequired(Forbidden):
    code = "transport.consent_required"
    title = "The resident's consent is required"


class NoTransportSystem(NotFound):
    code = "transport.no_system"
    title = "No transit operator is connected"


class CardNotFound(NotFound):
    code = "transport.card_not_found"
    title = "The operator does not know this card"


class CardNotYours(InvalidInput):
    code = "transport.card_mismatch"
    title = "The card is not registered to you"


class CardNotActive(Conflict):
    code = "transport.card_inactive"
    title = "The card is not active"
