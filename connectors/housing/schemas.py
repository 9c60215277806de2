"""The fund centres' payloads, exactly as README.md documents them; parsed here, at the edge.

Money is a decimal string (``"1920.00"``), never a JSON number: it goes into signed documents, whose canonical
form carries no floats.
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def _money(v: str) -> str:
    if not re.fullmatch(r"-?\d{1,12}\.\d{2}", v):
        raise ValueError("money is a string with two decimals, e.g. '1920.00'")
    return v


def _month(v: str) -> str:
    if not MONTH.match(v):
        raise ValueError("a month is YYYY-MM")
    return v


def _rate(v: str) -> str:
    if not re.fullmatch(r"0\.\d{1,4}", v):
        raise ValueError("a rate is a decimal fraction string, e.g. '0.12'")
    return v


Money = Annotated[str, Field(max_length=20), AfterValidator(_money)]
Month = Annotated[str, Field(max_length=7), AfterValidator(_month)]
Rate = Annotated[str, Field(max_length=8), AfterValidator(_rate)]


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False)


class FundAccount(Payload):
    account_number: str = Field(min_length=1, max_length=64)
    status: Literal["active", "sealed", "closed"]
    employer: str = Field(max_length=200)
    opened_on: dt.date
    deposit_base: Money
    personal_rate: Rate
    employer_rate: Rate
    monthly_deposit: Money
    balance: Money
    first_month: Month
    last_month: Month
    months_deposited: int = Field(ge=0, le=1200)


class AccountList(Payload):
    accounts: list[FundAccount] = Field(max_length=50)


class Deposit(Payload):
    month: Month
    amount: Money
    kind: Literal["regular", "supplementary"]


class DepositHistory(Payload):
    account_number: str = Field(min_length=1, max_length=64)
    deposits: list[Deposit] = Field(max_length=1200)

    def summary(self) -> dict[str, object]:
        """Counts and the total: what the portal and the certificate show of the history."""
        total = sum((Decimal(d.amount) for d in self.deposits), Decimal("0.00"))
        months = sorted({d.month for d in self.deposits})
        return {
            "deposits": len(self.deposits),
            "months": len(months),
            "total": f"{total:.2f}",
            "from_month": months[0] if months else None,
            "to_month": months[-1] if months else None,
        }


class CreditEntry(Payload):
    city: str = Field(max_length=50)
    kind: Literal["rent_arrears", "sublet", "false_declaration", "damage", "other"]
    recorded_on: dt.date
    resolved: bool


class CreditRecord(Payload):
    level: Literal["good", "attention", "restricted"]
    records: list[CreditEntry] = Field(max_length=200)


RentalStatus = Literal[
    "submitted", "under_review", "approved", "waiting_allocation", "allocated", "rejected", "withdrawn"
]


class RentalChange(Payload):
    seq: int = Field(ge=1)
    application_no: str = Field(min_length=1, max_length=64)
    id_number: str = Field(min_length=15, max_length=20)
    city: str = Field(max_length=50)
    estate: str = Field(max_length=200)
    status: RentalStatus
    queue_position: int | None = Field(default=None, ge=1)
    submitted_on: dt.date
    updated_at: dt.datetime


class RentalChangePage(Payload):
    changes: list[RentalChange]
    latest_seq: int = Field(ge=0)
