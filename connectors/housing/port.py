"""The port: what the federation needs from a fund centre, whoever implements it (the HTTP adapter, a fake)."""

from __future__ import annotations

from typing import Protocol

from connectors.housing.schemas import CreditRecord, DepositHistory, FundAccount, RentalChangePage


class HousingPort(Protocol):
    async def fund_accounts(self, id_number: str) -> list[FundAccount] | None:
        """The person's provident-fund accounts at this centre; None if the centre does not know them."""
        ...

    async def deposits(self, account_number: str, months: int) -> DepositHistory | None:
        """An account's deposits over the last ``months`` months, newest first; None for an unknown account."""
        ...

    async def rental_credit(self, id_number: str) -> CreditRecord:
        """The public-rental credit record shared by both cities (a clean record for a person never recorded)."""
        ...

    async def rental_changes(self, after: int, limit: int) -> RentalChangePage:
        """Public-rental application reports with a sequence number above ``after``."""
        ...
