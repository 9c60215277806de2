"""Refusals of the social-security context, each with a stable code."""

from __future__ import annotations

from federation.errors import Conflict, Forbidden, InvalidInput, NotFound


class CardNotFound(NotFound):
    code = "social_security.card_not_found"
    title = "No social-security system knows this card"


class CardMismatch(InvalidInput):
    code = "social_security.card_mismatch"
    title = "The card does not belong to this name and ID number"


class CardNotActive(Conflict):
    code = "social_security.card_inactive"
    title = "The card is not active"


class ConsentRequired(Forbidden):
    code = "social_security.consent_required"
    title = "The resident's consent is required"


class NoSocialSecuritySystem(NotFound):
    code = "social_security.no_system"
    title = "No social-security system is connected"


class NotYourCard(Forbidden):
    code = "social_security.not_yours"
    title = "A resident links only their own card"
