"""The transport port over HTTP (the partner API in README.md). Card and ID numbers travel in JSON bodies, never in
URLs."""

from __future__ import annotations

from connectors.framework.http import ConnectorClient
from connectors.transport.schemas import CardCheck, CardSnapshot, UpdatePage


class HttpTransport:
    def __init__(self, client: ConnectorClient) -> None:
        self.client = client

    async def check_card(self, card_number: str, id_number: str) -> CardCheck | None:
        body = {"card_number": card_number, "id_number": id_number}
        return await self.client.post_json("/v1/cards/verify", CardCheck, body=body, none_on=(404,))

    async def card_snapshot(self, card_number: str) -> CardSnapshot:
        found = await self.client.post_json("/v1/cards/snapshot", CardSnapshot, body={"card_number": card_number})
        assert found is not None
        return found

    async def updates(self, after: int, limit: int) -> UpdatePage:
        page = await self.client.get_json("/v1/updates", UpdatePage, params={"after": after, "limit": limit})
        assert page is not None
        return page
