"""The port: what the federation needs from a transit operator, whoever implements it (the HTTP adapter, a fake)."""

from __future__ import annotations

from typing import Protocol

from connectors.transport.schemas import CardCheck, CardSnapshot, UpdatePage


class TransportPort(Protocol):
    async def check_card(self, card_number: str, id_number: str) -> CardCheck | None:
        """The card's status and whether it is registered to this ID number; None for an unknown card."""
        ...

    async def card_snapshot(self, card_number: str) -> CardSnapshot:
        """The latest update of each pass and month of one card (to fill in a card linked after they passed)."""
        ...

    async def updates(self, after: int, limit: int) -> UpdatePage:
        """Pass and trip-count updates with a sequence number above ``after``."""
        ...
