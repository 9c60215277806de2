"""The transit operators' payloads, exactly as README.md documents them; parsed here, at the edge. The operators
send summaries only (pass states, monthly trip counts): no trip, station or time of travel is ever asked for."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

Month = Annotated[str, Field(pattern=r"^\d{4}-(0[1-9]|1[0-2])$")]


class Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=False)


class CardCheck(Payload):
    card_number: str = Field(min_length=1, max_length=64)
    status: Literal["active", "lost", "cancelled"]
    holder_matches: bool


class PassUpdate(Payload):
    seq: int = Field(ge=1)
    type: Literal["pass"]
    card_number: str = Field(min_length=1, max_length=64)
    pass_id: str = Field(min_length=1, max_length=64)
    product: str = Field(max_length=100)
    period: Month
    rides_total: int = Field(ge=0, le=10_000)
    rides_used: int = Field(ge=0, le=10_000)
    status: Literal["active", "used_up", "expired", "suspended", "cancelled"]


class TripCountUpdate(Payload):
    seq: int = Field(ge=1)
    type: Literal["trip_count"]
    card_number: str = Field(min_length=1, max_length=64)
    month: Month
    trips: int = Field(ge=0, le=100_000)


Update = Annotated[PassUpdate | TripCountUpdate, Field(discriminator="type")]


class UpdatePage(Payload):
    updates: list[Update]
    latest_seq: int = Field(ge=0)


class CardSnapshot(Payload):
    updates: list[Update]
