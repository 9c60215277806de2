"""The social-security port over HTTP (the partner API in README.md). Card and ID numbers travel in JSON bodies,
never in URLs."""

from __future__ import annotations

from connectors.framework.http import ConnectorClient
from connectors.social_security.schemas import CardEventPage, CardVerification, Summary


class HttpSocialSecurity:
    def __init__(self, client: ConnectorClient) -> None:
        self.client = client

    async def verify_card(self, card_number: str, name: str, id_number: str) -> CardVerification | None:
        body = {"card_number": card_number, "name": name, "id_number": id_number}
        return await self.client.post_json("/v1/cards/verify", CardVerification, body=body, none_on=(404,))

    async def card_events(self, after: int, limit: int) -> CardEventPage:
        page = await self.client.get_json("/v1/card-events", CardEventPage, params={"after": after, "limit": limit})
        assert page is not None  # no status is an answer here
        return page

    async def summary(self, id_number: str) -> Summary | None:
        return await self.client.post_json("/v1/summaries", Summary, body={"id_number": id_number}, none_on=(404,))
