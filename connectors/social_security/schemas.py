"""The social-security partners' payloads, exactly as README.md documents them; parsed here, at the edge."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

CardStatusName = Literal["active", "lost", "cancelled", "reissued"]


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False)


class CardVerification(Payload):
    card_number: str = Field(min_length=1, max_length=64)
    status: CardStatusName
    holder_matches: bool
    replaced_by: str | None = Field(default=None, max_length=64)


class CardEvent(Payload):
    seq: int = Field(ge=1)
    type: Literal["lost", "cancelled", "reissued"]
    card_number: str = Field(min_length=1, max_length=64)
    new_card_number: str | None = Field(default=None, max_length=64)
    occurred_at: dt.datetime

    @model_validator(mode="after")
    def _reissue_names_the_new_card(self) -> CardEvent:
        if self.type == "reissued" and not self.new_card_number:
            raise ValueError("a reissued event needs new_card_number")
        return self


class CardEventPage(Payload):
    events: list[CardEvent]
    latest_seq: int = Field(ge=0)


class Enrolment(Payload):
    city: str = Field(max_length=50)
    scheme: str = Field(max_length=100)
    status: Literal["active", "suspended", "ended"]
    since: str = Field(max_length=10)


class PensionTransfer(Payload):
    status: Literal["none", "applied", "in_progress", "completed", "rejected"]
    from_city: str | None = Field(default=None, max_length=50)
    to_city: str | None = Field(default=None, max_length=50)
    updated_at: dt.datetime | None = None


class Summary(Payload):
    enrolments: list[Enrolment]
    pension_transfer: PensionTransfer
