"""The hospital port over HTTP: ``GET [base]/{type}?_lastUpdated=gt..&_sort=_lastUpdated&_count=N`` and the
``next`` links the server hands back.

A ``next`` link is followed only when it is under the connector's base URL: the credentials travel with every
request, and a server (or whoever forged its answer) must not send them elsewhere.
"""

from __future__ import annotations

import datetime as dt

from connectors.framework.errors import BadResponse
from connectors.framework.http import ConnectorClient
from connectors.hospital_systems.port import Changed, Page
from connectors.hospital_systems.schemas import SearchSet, parse_instant


def fhir_instant(when: dt.datetime) -> str:
    """An instant for a query string, in UTC with a ``Z`` (no ``+`` to be read back as a space)."""
    spec = "milliseconds" if when.microsecond % 1000 == 0 else "microseconds"
    return when.astimezone(dt.UTC).isoformat(timespec=spec).replace("+00:00", "Z")


class HttpHospitalFhir:
    def __init__(self, client: ConnectorClient) -> None:
        self.client = client

    async def changed(self, rtype: str, since: dt.datetime | None, count: int) -> Page:
        params: dict[str, str | int] = {"_sort": "_lastUpdated", "_count": count}
        if since is not None:
            params["_lastUpdated"] = "gt" + fhir_instant(since)
        return self._page(rtype, await self.client.get_json(f"/{rtype}", SearchSet, params=params))

    async def follow(self, url: str, rtype: str) -> Page:
        """The next page of a search of ``rtype`` (entries of other types are skipped, as on the first page)."""
        base = self.client.config.base_url
        if not url.startswith(base + "/") and not url.startswith(base + "?"):
            raise BadResponse(f"connector {self.client.name}: a next link leaves the server's base URL")
        return self._page(rtype, await self.client.get_json(url[len(base) :], SearchSet))

    def _page(self, rtype: str, bundle: SearchSet | None) -> Page:
        assert bundle is not None  # no none_on statuses asked for
        out: list[Changed] = []
        skipped = 0
        for entry in bundle.entry:
            head = entry.head
            if head.resourceType != rtype:
                skipped += 1
                continue
            out.append(Changed(rtype, head.id, parse_instant(head.meta.lastUpdated), entry.resource))
        return Page(out, bundle.next_url(), skipped)
