"""The port: what the federation needs from a social-security system, whoever implements it (the HTTP adapter,
a fake in unit tests)."""

from __future__ import annotations

from typing import Protocol

from connectors.social_security.schemas import CardEventPage, CardVerification, Summary


class SocialSecurityPort(Protocol):
    async def verify_card(self, card_number: str, name: str, id_number: str) -> CardVerification | None:
        """The card's status and whether it belongs to this name and ID number; None if the system has no such
        card."""
        ...

    async def card_events(self, after: int, limit: int) -> CardEventPage:
        """Card status events with a sequence number above ``after``, at most ``limit`` of them."""
        ...

    async def summary(self, id_number: str) -> Summary | None:
        """Insurance enrolments and the pension transfer of a person; None if the system does not know them."""
        ...
