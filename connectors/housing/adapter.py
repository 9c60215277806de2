"""The housing port over HTTP (the partner API in README.md). ID and account numbers travel in JSON bodies, never
in URLs."""

from __future__ import annotations

from connectors.framework.errors import BadResponse
from connectors.framework.http import ConnectorClient
from connectors.housing.schemas import AccountList, CreditRecord, DepositHistory, FundAccount, RentalChangePage


class HttpHousing:
    def __init__(self, client: ConnectorClient) -> None:
        self.client = client

    async def fund_accounts(self, id_number: str) -> list[FundAccount] | None:
        body = await self.client.post_json(
            "/v1/accounts/query", AccountList, body={"id_number": id_number}, none_on=(404,)
        )
        return None if body is None else body.accounts

    async def deposits(self, account_number: str, months: int) -> DepositHistory | None:
        body = {"account_number": account_number, "months": months}
        found = await self.client.post_json("/v1/deposits/query", DepositHistory, body=body, none_on=(404,))
        if found is not None and found.account_number != account_number:
            raise BadResponse(f"connector {self.client.name}: /v1/deposits/query answered for another account")
        return found

    async def rental_credit(self, id_number: str) -> CreditRecord:
        found = await self.client.post_json("/v1/rental/credit", CreditRecord, body={"id_number": id_number})
        assert found is not None  # no status is an answer here
        return found

    async def rental_changes(self, after: int, limit: int) -> RentalChangePage:
        page = await self.client.get_json(
            "/v1/rental/changes", RentalChangePage, params={"after": after, "limit": limit}
        )
        assert page is not None
        return page
