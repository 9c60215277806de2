"""The library sandbox speaks OAI-PMH as README.md documents it: from/until, resumption tokens with
completeListSize and cursor, the protocol's errors, deleted records."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from aiohttp import ClientSession

from connectors.library_systems import sandbox as oai_sandbox

NS = {"o": "http://www.openarchives.org/OAI/2.0/", "m": "http://www.loc.gov/MARC21/slim"}


@pytest.fixture
async def oai():
    async with oai_sandbox.started_app(records=120, deleted=2, page_size=50) as url:

        async def get(**params: str) -> ET.Element:
            async with ClientSession() as s, s.get(url + "/oai", params=params) as r:
                assert r.status == 200 and r.content_type == "text/xml"
                return ET.fromstring(await r.read())

        yield get


def error(root: ET.Element) -> str | None:
    el = root.find("o:error", NS)
    return None if el is None else el.get("code")


async def test_a_list_walks_its_tokens_with_size_and_cursor_to_the_end(oai):
    root = await oai(verb="ListRecords", metadataPrefix="marcxml")
    seen, cursors = [], []
    while True:
        records = root.findall("o:ListRecords/o:record", NS)
        seen += [r.findtext("o:header/o:identifier", namespaces=NS) for r in records]
        token = root.find("o:ListRecords/o:resumptionToken", NS)
        if token is None:
            break
        assert token.get("completeListSize") == "120"
        cursors.append(int(token.get("cursor")))
        if not token.text:
            break
        root = await oai(verb="ListRecords", resumptionToken=token.text)
    assert cursors == [0, 50, 100] and len(seen) == len(set(seen)) == 120
    deleted = root.findall("o:ListRecords/o:record/o:header[@status='deleted']", NS)
    assert len(deleted) == 2


async def test_from_and_until_are_inclusive_and_the_protocol_errors_are_oai_errors(oai):
    root = await oai(
        verb="ListRecords", metadataPrefix="marc21", **{"from": "2026-06-01T00:00:10Z", "until": "2026-06-01T00:00:11Z"}
    )
    assert len(root.findall("o:ListRecords/o:record", NS)) == 6
    record = root.find("o:ListRecords/o:record/o:metadata/m:record", NS)
    assert record is not None and record.find("m:controlfield[@tag='001']", NS).text == "sbl000030"
    assert error(await oai(verb="ListRecords", metadataPrefix="marcxml", **{"from": "2027-01-01"})) == "noRecordsMatch"
    assert error(await oai(verb="ListRecords", resumptionToken="forged")) == "badResumptionToken"
    assert error(await oai(verb="ListRecords", metadataPrefix="oai_dc")) == "cannotDisseminateFormat"
    assert error(await oai(verb="ListRecords", metadataPrefix="marcxml", **{"from": "yesterday"})) == "badArgument"
    assert error(await oai(verb="Nope")) == "badVerb"
    ident = await oai(verb="Identify")
    assert ident.findtext("o:Identify/o:granularity", namespaces=NS) == "YYYY-MM-DDThh:mm:ssZ"
