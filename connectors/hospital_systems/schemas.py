"""The hospital's FHIR searchset Bundle as README.md documents it, checked at the edge.

Only what the pull relies on is typed strictly (the Bundle's type, its links, each entry's resource type, id and
``meta.lastUpdated``); the resource itself is validated by the health ingest (fhir.resources R4B and our profile).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator


def parse_instant(value: str) -> dt.datetime:
    """A FHIR instant (a time zone is required) as an aware UTC datetime; ValueError otherwise."""
    moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("an instant needs a time zone")
    return moment.astimezone(dt.UTC)


class Meta(BaseModel):
    model_config = ConfigDict(extra="ignore")

    lastUpdated: StrictStr  # noqa: N815 - FHIR's own name
    versionId: StrictStr | None = None  # noqa: N815

    @field_validator("lastUpdated")
    @classmethod
    def _instant(cls, v: str) -> str:
        parse_instant(v)
        return v


class ResourceHead(BaseModel):
    """What the pull reads of a resource; the whole JSON object travels on to the ingest as it came."""

    model_config = ConfigDict(extra="ignore")

    resourceType: StrictStr  # noqa: N815
    id: StrictStr = Field(min_length=1, max_length=64)
    meta: Meta


class Entry(BaseModel):
    model_config = ConfigDict(extra="ignore")

    fullUrl: StrictStr | None = None  # noqa: N815
    resource: dict[str, Any]

    @field_validator("resource")
    @classmethod
    def _head(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            ResourceHead.model_validate(v)
        except ValidationError as e:
            wrong = "; ".join(
                f"{'.'.join(str(x) for x in err['loc'])}: {err['type']}"
                for err in e.errors(include_url=False, include_input=False, include_context=False)[:3]
            )
            raise ValueError(f"resource without a usable type, id or meta.lastUpdated ({wrong})") from None
        return v

    @property
    def head(self) -> ResourceHead:
        return ResourceHead.model_validate(self.resource)


class Link(BaseModel):
    model_config = ConfigDict(extra="ignore")

    relation: StrictStr
    url: StrictStr


class SearchSet(BaseModel):
    model_config = ConfigDict(extra="ignore")

    resourceType: StrictStr  # noqa: N815
    type: StrictStr
    total: int | None = Field(default=None, strict=True)
    link: list[Link] = Field(default_factory=list)
    entry: list[Entry] = Field(default_factory=list)

    @field_validator("resourceType")
    @classmethod
    def _bundle(cls, v: str) -> str:
        if v != "Bundle":
            raise ValueError("not a Bundle")
        return v

    @field_validator("type")
    @classmethod
    def _searchset(cls, v: str) -> str:
        if v != "searchset":
            raise ValueError("not a searchset Bundle")
        return v

    def next_url(self) -> str | None:
        return next((x.url for x in self.link if x.relation == "next"), None)
