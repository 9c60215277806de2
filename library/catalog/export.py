"""Exporting stored records as MARC21 (ISO 2709, UTF-8) and MARCXML."""

from __future__ import annotations

from collections.abc import Iterable

import pymarc

from library.catalog.models import BibRecordRow

MARCXML_NS = "http://www.loc.gov/MARC21/slim"


def record_of(row: BibRecordRow) -> pymarc.Record:
    if not row.marc:
        raise ValueError(f"record {row.id} has no stored MARC")
    return pymarc.Record(data=row.marc, force_utf8=True)


def to_marc21(row: BibRecordRow) -> bytes:
    return bytes(row.marc or b"")


def to_marcxml(rows: Iterable[BibRecordRow]) -> bytes:
    parts = [b'<?xml version="1.0" encoding="UTF-8"?>\n<collection xmlns="' + MARCXML_NS.encode() + b'">']
    for row in rows:
        parts.append(pymarc.record_to_xml(record_of(row), namespace=False))
    parts.append(b"</collection>\n")
    return b"\n".join(parts)


def record_xml(row: BibRecordRow) -> bytes:
    """One record as a namespaced ``<record>`` element (for OAI-PMH and SRU)."""
    return pymarc.record_to_xml(record_of(row), namespace=True)
