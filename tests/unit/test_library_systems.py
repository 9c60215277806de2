"""The OAI-PMH parsing at the edge and the harvest's pure parts."""

from __future__ import annotations

import pytest

from connectors.framework.errors import InvalidConnector
from connectors.library_systems import schemas, service
from connectors.library_systems.schemas import OaiRecord, Unusable

HEAD = '<OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"><responseDate>2026-12-04T00:00:00Z</responseDate>'


def page(body: str) -> bytes:
    return f"{HEAD}<ListRecords>{body}</ListRecords></OAI-PMH>".encode()


def test_a_dtd_is_refused_before_parsing():
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><OAI-PMH xmlns="http://www.openarchives.org/OAI/2.0/"/>'
    )
    with pytest.raises(Unusable, match="document type"):
        schemas.document(bomb)
    with pytest.raises(Unusable, match="well-formed"):
        schemas.document(page("")[:40])
    with pytest.raises(Unusable, match="root element"):
        schemas.document(b"<html/>")


def test_records_deleted_ones_and_the_token_are_read_strictly():
    raw = page(
        '<record><header status="deleted"><identifier>oai:lib:a%3Ab</identifier>'
        "<datestamp>2026-06-01T00:00:00Z</datestamp></header></record>"
        '<resumptionToken completeListSize="10" cursor="0">t1</resumptionToken>'
    )
    result = schemas.list_records(schemas.document(raw), "YYYY-MM-DDThh:mm:ssZ")
    assert result.token == "t1" and (result.complete_list_size, result.cursor) == (10, 0)
    assert result.records[0].deleted and result.records[0].local_id == "a:b"
    with pytest.raises(Unusable, match="datestamp"):
        schemas.list_records(schemas.document(raw), "YYYY-MM-DD")
    no_meta = page("<record><header><identifier>x</identifier><datestamp>2026-06-01</datestamp></header></record>")
    with pytest.raises(Unusable, match="metadata"):
        schemas.list_records(schemas.document(no_meta), "YYYY-MM-DD")
    bad_size = page('<resumptionToken completeListSize="many">t</resumptionToken>')
    with pytest.raises(Unusable, match="completeListSize"):
        schemas.list_records(schemas.document(bad_size), "YYYY-MM-DD")


def test_a_repeated_record_counts_once_at_its_latest_datestamp_and_the_watermark_only_grows():
    a1 = OaiRecord("oai:l:a", "2026-06-01T00:00:01Z", False, b"")
    a2 = OaiRecord("oai:l:a", "2026-06-01T00:00:02Z", True, None)
    assert service.latest([a2, a1, a1]) == [a2]
    assert service.max_datestamp("2026-06-01T00:00:05Z", [a1, a2]) == "2026-06-01T00:00:05Z"
    assert service.max_datestamp(None, []) is None


def test_options_are_checked():
    assert service.HarvestOptions.of({}).metadata_prefix == "marcxml"
    for bad in ({"metadata_prefix": "oai_dc"}, {"holdings": "nope"}, {"set": 3}):
        with pytest.raises(InvalidConnector):
            service.HarvestOptions.of(bad)
