"""What the federation needs from a hospital's FHIR server: pages of resources changed after an instant."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True)
class Changed:
    """One resource of a page, with the instant the hospital last changed it."""

    rtype: str
    id: str
    updated: dt.datetime
    resource: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Page:
    resources: list[Changed]
    next: str | None  # the absolute URL of the next page, as the server gave it
    skipped: int = 0  # entries of another resource type (included resources, outcomes)


class HospitalFhir(Protocol):
    async def changed(self, rtype: str, since: dt.datetime | None, count: int) -> Page: ...

    async def follow(self, url: str, rtype: str) -> Page: ...
