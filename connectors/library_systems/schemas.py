"""OAI-PMH 2.0 answers as README.md documents them, parsed at the edge into our own types.

Parsing is strict where the harvest relies on it (every record's identifier and datestamp, the resumption token's
attributes) and refuses DTDs outright: an OAI-PMH answer has no use for one, and entity expansion is how a hostile
XML body grows past any size cap.
"""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from urllib.parse import unquote

OAI = "{http://www.openarchives.org/OAI/2.0/}"
MARC_NS = "http://www.loc.gov/MARC21/slim"
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SECOND = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
GRANULARITIES = ("YYYY-MM-DD", "YYYY-MM-DDThh:mm:ssZ")


class Unusable(ValueError):
    """The answer is not the OAI-PMH document it should be (the adapter turns this into ``BadResponse``)."""


@dataclasses.dataclass(frozen=True)
class OaiRecord:
    identifier: str
    datestamp: str
    deleted: bool
    marc: bytes | None  # one MARCXML <record> element, serialised; None for a deleted record

    @property
    def local_id(self) -> str:
        """The local part of ``oai:<repository>:<local>``, percent-decoded: the record's control number (001)."""
        parts = self.identifier.split(":", 2)
        return unquote(parts[2]) if len(parts) == 3 and parts[0] == "oai" else self.identifier


@dataclasses.dataclass(frozen=True)
class ListPage:
    records: list[OaiRecord]
    token: str | None  # None or "": the list is complete
    complete_list_size: int | None = None
    cursor: int | None = None


@dataclasses.dataclass(frozen=True)
class Identity:
    granularity: str
    earliest: str
    deleted_record: str


@dataclasses.dataclass(frozen=True)
class ProtocolError:
    code: str
    message: str


def document(raw: bytes) -> ET.Element:
    head = raw[:4096]
    if b"<!DOCTYPE" in head or b"<!ENTITY" in raw:
        raise Unusable("a document type declaration in an OAI-PMH answer")
    try:
        root = ET.fromstring(raw)  # noqa: S314 - no DTD (checked above), size capped by the client
    except ET.ParseError as e:
        raise Unusable(f"not well-formed XML ({e})") from None
    if root.tag != f"{OAI}OAI-PMH":
        raise Unusable(f"the root element is {root.tag[:60]!r}, not OAI-PMH")
    return root


def error_of(root: ET.Element) -> ProtocolError | None:
    err = root.find(f"{OAI}error")
    if err is None:
        return None
    return ProtocolError(err.get("code") or "unknown", (err.text or "").strip()[:200])


def _text(parent: ET.Element, name: str, where: str) -> str:
    el = parent.find(f"{OAI}{name}")
    if el is None or not (el.text or "").strip() or len(el):
        raise Unusable(f"{where} has no {name}")
    return (el.text or "").strip()


def datestamp_ok(value: str, granularity: str) -> bool:
    return bool(DAY.match(value) or (granularity != "YYYY-MM-DD" and SECOND.match(value)))


def identify(root: ET.Element) -> Identity:
    node = root.find(f"{OAI}Identify")
    if node is None:
        raise Unusable("an Identify answer without Identify")
    granularity = _text(node, "granularity", "Identify")
    if granularity not in GRANULARITIES:
        raise Unusable(f"unknown granularity {granularity[:30]!r}")
    earliest = _text(node, "earliestDatestamp", "Identify")
    if not datestamp_ok(earliest, granularity):
        raise Unusable("earliestDatestamp is not a datestamp")
    return Identity(granularity, earliest, _text(node, "deletedRecord", "Identify"))


def _int_attr(el: ET.Element, name: str) -> int | None:
    value = el.get(name)
    if value is None:
        return None
    if not value.isdigit():
        raise Unusable(f"resumptionToken's {name} is not a number")
    return int(value)


def list_records(root: ET.Element, granularity: str) -> ListPage:
    node = root.find(f"{OAI}ListRecords")
    if node is None:
        raise Unusable("a ListRecords answer without ListRecords")
    records = []
    for n, rec in enumerate(node.findall(f"{OAI}record")):
        where = f"record {n + 1}"
        header = rec.find(f"{OAI}header")
        if header is None:
            raise Unusable(f"{where} has no header")
        identifier = _text(header, "identifier", where)
        datestamp = _text(header, "datestamp", where)
        if not datestamp_ok(datestamp, granularity):
            raise Unusable(f"{where}'s datestamp is not a {granularity} datestamp")
        deleted = header.get("status") == "deleted"
        marc = None
        if not deleted:
            metadata = rec.find(f"{OAI}metadata")
            inner = list(metadata) if metadata is not None else []
            if len(inner) != 1:
                raise Unusable(f"{where} has no metadata record")
            marc = ET.tostring(inner[0], encoding="utf-8", xml_declaration=False)
        records.append(OaiRecord(identifier, datestamp, deleted, marc))
    token_el = node.find(f"{OAI}resumptionToken")
    if token_el is None:
        return ListPage(records, None)
    token = (token_el.text or "").strip() or None
    return ListPage(records, token, _int_attr(token_el, "completeListSize"), _int_attr(token_el, "cursor"))


def marc_collection(records: list[bytes]) -> bytes:
    """MARCXML records (each a serialised ``<record>``) as one ``<collection>`` document for the catalogue reader."""
    return b"".join(
        [f'<?xml version="1.0" encoding="UTF-8"?><collection xmlns="{MARC_NS}">'.encode(), *records, b"</collection>"]
    )
