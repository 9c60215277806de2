"""The OAI-PMH port over HTTP, on the framework's client (retries, breaker, bucket, body cap) with XML bodies.

The framework's client validates JSON; :class:`XmlClient` is the same client reading XML. It shares the sync's
session, breaker and bucket, and hands its call counts and last error back to the sync's client (which the
framework writes to the connector's health) when it is closed.
"""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from connectors.framework.errors import BadResponse
from connectors.framework.http import ConnectorClient
from connectors.library_systems import schemas
from connectors.library_systems.errors import OaiError
from connectors.library_systems.schemas import Identity, ListPage, Unusable

M = TypeVar("M", bound=BaseModel)
XML_TYPES = ("text/xml", "application/xml")


class XmlBody(BaseModel):
    """A well-formed OAI-PMH document; ``schemas`` reads its content."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    root: ET.Element


class XmlClient(ConnectorClient):
    """Parsing happens inside the call, so an unusable body counts against the breaker like any failed call."""

    def _parse(self, raw: bytes, ctype: str, path: str, model: type[M]) -> M:
        if ctype not in XML_TYPES and not ctype.endswith("+xml"):
            raise BadResponse(f"connector {self.name}: {path or '/'} answered {ctype or 'no content type'}, not XML")
        try:
            root = schemas.document(raw)
        except Unusable as e:
            raise BadResponse(f"connector {self.name}: {path or '/'}: {e}") from None
        return model.model_validate({"root": root})


@contextlib.asynccontextmanager
async def xml_client(client: ConnectorClient) -> AsyncIterator[XmlClient]:
    """``client`` reading XML: same session, policies and health; its counts flow back on the way out."""
    x = XmlClient(
        client.name, client.config, client.runtime, headers=client.headers, sleep=client.sleep, rand=client.rand
    )
    x.session, x.connector = client.session, client.connector
    try:
        yield x
    finally:
        client.calls += x.calls
        client.attempts += x.attempts
        if x.last_success_at is not None:
            client.last_success_at = max(client.last_success_at or 0.0, x.last_success_at)
        client.last_error = x.last_error
        x.session = None  # the sync's client closes it


class HttpOaiPmh:
    def __init__(self, client: XmlClient, path: str = "") -> None:
        self.client = client
        self.path = path

    async def _call(self, params: dict[str, str]) -> ET.Element:
        body = await self.client.get_json(self.path, XmlBody, params=params)
        assert body is not None  # no none_on statuses asked for
        return body.root

    def _refuse(self, verb: str, err: schemas.ProtocolError) -> OaiError:
        return OaiError(f"connector {self.client.name}: {verb}: OAI-PMH error {err.code}", oai_code=err.code)

    async def identify(self) -> Identity:
        root = await self._call({"verb": "Identify"})
        if (err := schemas.error_of(root)) is not None:
            raise self._refuse("Identify", err)
        try:
            return schemas.identify(root)
        except Unusable as e:
            raise BadResponse(f"connector {self.client.name}: Identify: {e}") from None

    async def list_records(
        self, prefix: str, granularity: str, *, since: str | None = None, oai_set: str | None = None
    ) -> ListPage:
        params = {"verb": "ListRecords", "metadataPrefix": prefix}
        if since:
            params["from"] = since
        if oai_set:
            params["set"] = oai_set
        return await self._list(params, granularity)

    async def resume(self, token: str, granularity: str) -> ListPage:
        return await self._list({"verb": "ListRecords", "resumptionToken": token}, granularity)

    async def _list(self, params: dict[str, str], granularity: str) -> ListPage:
        root = await self._call(params)
        if (err := schemas.error_of(root)) is not None:
            if err.code == "noRecordsMatch":
                return ListPage([], None)
            raise self._refuse("ListRecords", err)
        try:
            return schemas.list_records(root, granularity)
        except Unusable as e:
            raise BadResponse(f"connector {self.client.name}: ListRecords: {e}") from None
