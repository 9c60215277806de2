"""Streaming MARC reader: ISO 2709 (MARC21 and UNIMARC/CNMARC), MARCXML and MARC-in-JSON, of any size.

``read()`` yields one ``RawRecord`` per good record and one ``Rejection`` per bad one, in file order, with
memory flat in the file size (blocks of 1 MiB; one record is at most 99,999 bytes in ISO 2709). A bad record
never stops the load: it is reported with its ordinal, its byte offset and a reason, and reading resumes at the
next record.

ISO 2709 framing
    We chunk the records ourselves: a record runs from its leader to the next record terminator (0x1D). None of
    the encodings we read (UTF-8, MARC-8, GBK/GB18030/GB2312, Latin-1) can put a 0x1D inside a character, so the
    terminator is a safe resynchronisation point. A chunk whose leader length (positions 0-4) matches its size is
    parsed; otherwise it is rejected (non-numeric length, wrong length, truncated, empty, unparseable data) and,
    when a well-formed record starts inside the bad chunk (a truncated record followed directly by the next
    one), that record is recovered. More than 99,999 bytes without a terminator is reported as one rejection
    while the scan goes on in bounded memory. Inside a record we check the leader, the base address, every
    directory entry (a field running past the end of the record is rejected), the indicators (printable ASCII)
    and the character decoding (the reason names the field tag).

Dialect (MARC21 or UNIMARC) for ``Format.AUTO``
    per record from its directory: 245 present, or 008 without a UNIMARC 200 -> MARC21; no 245, a 200 title and
    a 100 whose $a is 36+ characters starting with an 8-digit date -> UNIMARC; otherwise the file's dialect as
    ``detect_format`` found it from the first record. ``Format.MARC21``/``Format.UNIMARC`` force it.

Encoding for ``Encoding.AUTO`` (per record; a forced encoding overrides all of this)
    MARC21: leader/09 'a' -> UTF-8. Otherwise MARC-8 (basic and extended Latin/ANSEL, EACC CJK through
    ``pymarc.marc8.marc8_to_unicode``, checked strictly first so unmappable bytes are rejected, not blanked),
    except that a record with bytes >= 0x80, no escape sequence and valid UTF-8 throughout is read as UTF-8: a
    UTF-8 record mislabelled with a blank leader/09 is common, and ANSEL (a combining mark followed by an ASCII
    letter) is practically never valid UTF-8.
    UNIMARC/CNMARC: the charset declared in 100 $a/26-29 ("50  " = ISO 10646/UTF-8, "01  " ISO 646, ...) is
    often wrong in Chinese files (blank, or "50" on GBK data), so: (1) bytes that are valid UTF-8 -> UTF-8 (the
    declared-UTF-8 case, extended to undeclared and mislabelled records: GBK text is practically never valid
    UTF-8, so valid UTF-8 is the stronger evidence); (2) otherwise bytes that decode as GB18030 (a superset of
    GBK and GB2312) -> GB18030; (3) otherwise the declared charset (blank or 50 -> UTF-8, 01/02 -> ASCII,
    anything else -> ISO 8859-1), and the field that does not decode under it rejects the record, the reason
    naming its tag. A European UNIMARC file in Latin-1 that happens to decode as GB18030 would be misread by
    step 2: force ``Encoding.LATIN1`` for such a member.

MARCXML is parsed with expat as a stream (byte offsets from the parser); a document that stops being
well-formed yields one rejection and ends the read, since XML cannot be resynchronised. MARC-in-JSON accepts
NDJSON, a JSON array or concatenated objects, streamed; a malformed object is rejected and reading resumes at
the next line that opens an object at the same depth or shallower (column 0 for NDJSON).
"""

from __future__ import annotations

import codecs
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, Any
from xml.parsers import expat

from pymarc import Field, Indicators, Leader, Record, Subfield, marc8_mapping
from pymarc.marc8 import marc8_to_unicode

__all__ = [
    "Encoding",
    "Format",
    "RawRecord",
    "Rejection",
    "detect_format",
    "read",
    "utf8_iso2709",
]

log = logging.getLogger(__name__)


class Format(StrEnum):
    AUTO = "auto"
    MARC21 = "marc21"  # ISO 2709 binary
    MARCXML = "marcxml"
    MARCJSON = "marcjson"  # MARC-in-JSON: NDJSON, a JSON array, or concatenated objects
    UNIMARC = "unimarc"  # ISO 2709 binary with UNIMARC/CNMARC semantics


class Encoding(StrEnum):
    AUTO = "auto"
    UTF8 = "utf-8"
    MARC8 = "marc-8"
    GBK = "gbk"
    GB18030 = "gb18030"
    GB2312 = "gb2312"
    LATIN1 = "iso-8859-1"


@dataclass(frozen=True, slots=True)
class RawRecord:
    position: int  # 0-based ordinal among everything read (records and rejections)
    offset: int  # byte offset of the record in the file
    record: Record
    dialect: str  # "marc21" or "unimarc"
    encoding: str  # the encoding actually used for this record
    library: str | None = None  # member code passed to read(), for reports


@dataclass(frozen=True, slots=True)
class Rejection:
    position: int
    offset: int
    reason: str
    control_number: str | None
    library: str | None = None


MAX_RECORD = 99_999  # ISO 2709: five-digit record length
BLOCK = 1 << 20
HEAD = 1 << 16
_WINDOW = 2 * MAX_RECORD + BLOCK  # bytes kept while looking for a record terminator

_RT = 0x1D
_FT = 0x1E
_ESC = b"\x1b"

_SEPARATORS = re.compile(rb"[\r\n\t \x00\x1a]*")  # tolerated between ISO 2709 records
_LEADER_OK = re.compile(rb"[0-9]{5}[\x20-\x7e]{7}[0-9]{5}[\x20-\x7e]{7}")
_LEADERISH = re.compile(rb"(?=([0-9]{5})[\x20-\x7e]{7}[0-9]{5}[\x20-\x7e]{7})")
_ENTRY = re.compile(rb"([0-9A-Za-z]{3})([0-9]{4})([0-9]{5})")
_XML_DECL_ENCODING = re.compile(rb"""<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")

_BLANK = Indicators(" ", " ")
_PRINTABLE = range(0x20, 0x7F)
_new_field = Field.__new__
_new_tuple = tuple.__new__

# UNIMARC 100 $a/26-27 (G0 set) -> codec used as the last resort
_UNIMARC_CHARSETS = {"50": "utf-8", "01": "ascii", "02": "ascii"}


class _Bad(Exception):
    """A record that cannot be used, with the reason for the report."""


class _Undecodable(_Bad):
    """A field whose bytes do not decode under the encoding tried (another one may be tried)."""


# --------------------------------------------------------------------------- pymarc objects, built fast


def _control_field(tag: str, data: str) -> Field:
    f = _new_field(Field)
    f.tag = tag
    f.data = data
    f.control_field = True
    f._indicators = None
    f.subfields = []
    return f


def _data_field(tag: str, indicators: Indicators, subfields: list[Subfield]) -> Field:
    f = _new_field(Field)
    f.tag = tag
    f.data = None
    f.control_field = False
    f._indicators = indicators
    f.subfields = subfields
    return f


_new_record = Record.__new__


class _Utf8Record(Record):
    """A record read from UTF-8 ISO 2709 whose ``as_marc()`` would give back the bytes it was read from."""

    __slots__ = ("iso2709",)


def _record(leader: str, fields: list[Field], cls: type[Record] = Record) -> Record:
    # what Record.__init__ sets, minus its rewrite of leader/10-11 and 20-23: keep the file's leader as it is
    rec = _new_record(cls)
    rec.leader = Leader(leader)
    rec.fields = fields
    rec.pos = 0
    rec._Record__pos = 0
    rec.force_utf8 = False
    rec.to_unicode = True
    return rec


_INDICATORS: dict[bytes, Indicators] = {}


def _indicators(raw: bytes, tag: str) -> Indicators:
    ind = _INDICATORS.get(raw)
    if ind is None:
        if len(raw) != 2 or raw[0] not in _PRINTABLE or raw[1] not in _PRINTABLE:
            raise _Bad(f"field {tag}: invalid indicators {raw!r} (must be printable ASCII)")
        ind = _INDICATORS[raw] = Indicators(chr(raw[0]), chr(raw[1]))
    return ind


# --------------------------------------------------------------------------- MARC-8


_CODESETS = marc8_mapping.CODESETS
_ODD_MAP = marc8_mapping.ODD_MAP
_G0_ESC = (b"(", b",", b"$")
_G1_ESC = (b")", b"-")


def _marc8_first_invalid(s: bytes) -> int | None:
    """Offset of the first byte pymarc's MARC-8 translator would blank out or choke on, else None.

    Walks the escape sequences exactly as ``pymarc.marc8.MARC8ToUnicode.translate`` does.
    """
    g0, g1, pos, n = 0x42, 0x45, 0, len(s)
    while pos < n:
        start = pos
        if s[pos] == 0x1B:
            nb = s[pos + 1 : pos + 2]
            if nb in _G0_ESC:
                if n < pos + 3:
                    return start
                if s[pos + 2] == 0x2C and nb == b"$":
                    pos += 1
                    if n < pos + 3:
                        return start
                g0 = s[pos + 2]
                pos += 3
                continue
            if nb in _G1_ESC:
                if n < pos + 3:
                    return start
                g1 = s[pos + 2]
                pos += 3
                continue
            if nb and nb[0] in _CODESETS:
                g0 = nb[0]
                pos += 2
            elif nb == b"s":
                g0 = 0x42
                pos += 2
                if pos == n:
                    break
            if pos >= n:
                return start
        multibyte = g0 == 0x31
        if multibyte:
            if n < pos + 3:
                return pos
            cp = (s[pos] << 16) | (s[pos + 1] << 8) | s[pos + 2]
            char_at = pos
            pos += 3
        else:
            cp = s[pos]
            char_at = pos
            pos += 1
        if cp < 0x20 or 0x80 < cp < 0xA0:
            continue
        table = _CODESETS.get(g1 if cp > 0x80 and not multibyte else g0)
        if (table is None or cp not in table) and cp not in _ODD_MAP:
            return char_at
    return None


def marc8_decode(data: bytes) -> str:
    """Strict MARC-8 -> str: pymarc's translator, but unmappable bytes raise instead of becoming spaces."""
    if _ESC not in data and data.isascii():
        return data.decode("ascii")
    bad = _marc8_first_invalid(data)
    if bad is not None:
        raise UnicodeDecodeError("marc-8", data, bad, bad + 1, "no MARC-8 mapping")
    return marc8_to_unicode(data, hide_utf8_warnings=True)


# --------------------------------------------------------------------------- ISO 2709 records


_Entry = tuple[bytes, bytes, bytes]  # tag, length, start: the digits of one directory entry


def _structure(chunk: bytes) -> tuple[str, int, list[_Entry]]:
    """Leader, base address and directory entries of a framed record; raises _Bad.

    The entries are checked against the record (bounds, field terminators) while the fields are decoded.
    """
    n = len(chunk)
    if n < 26:
        raise _Bad(f"record too short ({n} bytes)")
    lead = chunk[:24]
    if not _LEADER_OK.fullmatch(lead):
        if not lead.isascii():
            raise _Bad("leader is not ASCII")
        raise _Bad(f"leader is malformed: {lead.decode('ascii')!r}")
    base = int(chunk[12:17])
    if base < 25 or base > n - 1:
        raise _Bad(f"base address {base} is outside the record ({n} bytes)")
    if chunk[base - 1] != _FT:
        raise _Bad(f"directory does not end with a field terminator at byte {base - 1}")
    directory = chunk[24 : base - 1]
    entries = _ENTRY.findall(directory)
    if len(entries) * 12 != len(directory):
        if len(directory) % 12:
            raise _Bad(f"directory length {len(directory)} is not a multiple of 12")
        for i in range(0, len(directory), 12):
            if not _ENTRY.fullmatch(directory[i : i + 12]):
                raise _Bad(f"directory entry {i // 12} is malformed: {directory[i : i + 12]!r}")
    if not entries:
        raise _Bad("record has no fields")
    return lead.decode("ascii"), base, entries


def _field_bytes(chunk: bytes, base: int, entry: _Entry) -> bytes:
    """The bytes of one field, without its terminator, when the directory entry is wrong in a way we can fix
    (a length that left out the terminator); raises _Bad otherwise."""
    tag_b, length_b, start_b = entry
    tag = tag_b.decode("ascii")
    length = int(length_b)
    start = base + int(start_b)
    stop = start + length
    last = len(chunk) - 1  # the record terminator
    if length == 0:
        raise _Bad(f"directory entry for field {tag} has length 0")
    if stop > last:
        raise _Bad(
            f"directory entry for field {tag} points past the end of the record "
            f"(offset {int(start_b)}, length {length}, data area {last - base} bytes)"
        )
    if chunk[stop] == _FT:
        return chunk[start:stop]
    raise _Bad(f"field {tag} does not end with a field terminator (directory and data disagree)")


def _odd_indicators(raw: bytes, tag: str) -> tuple[Indicators, bytes]:
    """Indicators and subfield bytes of a data field whose indicators are not two printable characters."""
    if not raw or raw[0] == 0x1F:  # empty field, or indicators missing altogether
        return _BLANK, raw
    if len(raw) > 1 and raw[1] == 0x1F:  # only one indicator
        return _indicators(raw[:1] + b" ", tag), raw[1:]
    return _indicators(raw[:2], tag), raw[2:]


def _decode_fields(chunk: bytes, base: int, entries: list[_Entry], codec: str) -> list[Field]:
    """pymarc fields of a record."""
    if codec == "marc-8":
        return _decode_fields_marc8(chunk, base, entries)
    return _decode(chunk, base, entries, codec)[0]


def _decode(chunk: bytes, base: int, entries: list[_Entry], codec: str) -> tuple[list[Field], bool]:
    """pymarc fields of a record, and whether ``Record.as_marc()`` would give back ``chunk`` itself (but for
    leader/09): fields laid out in directory order, two plain indicators and no empty subfields. The hot loop,
    hence the inlined bounds checks and Field construction."""
    fields: list[Field] = []
    append = fields.append
    known = _INDICATORS
    new_field, new_tuple, field_cls, subfield_cls = _new_field, _new_tuple, Field, Subfield
    last = len(chunk) - 1
    tag = "?"
    at = base  # where the next field starts when the data area is laid out in directory order
    exact = True
    try:
        for entry in entries:
            tag_b, length_b, start_b = entry
            start = base + int(start_b)
            stop = start + int(length_b)
            if stop <= last and stop > start and chunk[stop - 1] == _FT:
                raw = chunk[start : stop - 1]
            else:
                raw = _field_bytes(chunk, base, entry)
                exact = False
            if start != at:
                exact = False
            at = stop
            tag = tag_b.decode("ascii")
            f = new_field(field_cls)
            f.tag = tag
            if tag < "010" and tag.isdigit():
                f.data = raw.decode(codec)
                f.control_field = True
                f._indicators = None
                f.subfields = []
            else:
                ind = known.get(raw[:2])
                if ind is None:
                    ind, body = _odd_indicators(raw, tag)
                    if len(body) + 2 != len(raw):
                        exact = False
                else:
                    body = raw[2:]
                parts = body.decode(codec).split("\x1f")
                if exact and (parts[0] or parts.count("") != 1):
                    exact = False
                f.data = None
                f.control_field = False
                f._indicators = ind
                f.subfields = [new_tuple(subfield_cls, (p[0], p[1:])) for p in parts[1:] if p]
            append(f)
    except UnicodeDecodeError as e:
        bad = e.object[e.start : e.start + 4].hex(" ")
        raise _Undecodable(f"field {tag}: bytes [{bad}] at byte {e.start} are not valid {codec}") from None
    return fields, exact and at == last


def _decode_fields_marc8(chunk: bytes, base: int, entries: list[_Entry]) -> list[Field]:
    fields: list[Field] = []
    tag = "?"
    try:
        for entry in entries:
            raw = _field_bytes_checked(chunk, base, entry)
            tag = entry[0].decode("ascii")
            if tag < "010" and tag.isdigit():
                fields.append(_control_field(tag, marc8_decode(raw)))
                continue
            ind = _INDICATORS.get(raw[:2])
            if ind is None:
                ind, body = _odd_indicators(raw, tag)
            else:
                body = raw[2:]
            subfields = []
            for part in body.split(b"\x1f")[1:]:
                if part:
                    if part[0] > 0x7E:
                        raise _Bad(f"field {tag}: invalid subfield code byte 0x{part[0]:02x}")
                    subfields.append(_new_tuple(Subfield, (chr(part[0]), marc8_decode(part[1:]))))
            fields.append(_data_field(tag, ind, subfields))
    except UnicodeDecodeError as e:
        bad = e.object[e.start : e.start + 4].hex(" ")
        raise _Undecodable(f"field {tag}: bytes [{bad}] at byte {e.start} are not valid marc-8") from None
    return fields


def _field_bytes_checked(chunk: bytes, base: int, entry: _Entry) -> bytes:
    start = base + int(entry[2])
    stop = start + int(entry[1])
    if start < stop <= len(chunk) - 1 and chunk[stop - 1] == _FT:
        return chunk[start : stop - 1]
    return _field_bytes(chunk, base, entry)


def _field_100(chunk: bytes, base: int, entries: list[_Entry]) -> bytes | None:
    for entry in entries:
        if entry[0] == b"100":
            try:
                return _field_bytes_checked(chunk, base, entry)
            except _Bad:
                return None
    return None


def _subfield_a(raw: bytes) -> bytes | None:
    i = raw.find(b"\x1fa")
    if i < 0:
        return None
    j = raw.find(b"\x1f", i + 2)
    return raw[i + 2 :] if j < 0 else raw[i + 2 : j]


def _unimarc_100(raw: bytes | None) -> bytes | None:
    """100 $a of a UNIMARC record, when it is the 36-character general processing data starting with a date."""
    if raw is None:
        return None
    a = _subfield_a(raw)
    if a is None or len(a) < 36 or not a[:8].isdigit():
        return None
    return a


def _dialect_of(tags: Any, f100: bytes | None, f200: bool) -> str | None:
    """MARC21/UNIMARC from a record's tags (bytes, as in the directory) and raw 100 field, or None."""
    if b"245" in tags:
        return "marc21"
    if f200 and _unimarc_100(f100) is not None:
        return "unimarc"
    if b"008" in tags:
        return "marc21"
    return None


def _candidates(dialect: str, leader: str, data: bytes, f100: bytes | None) -> tuple[list[str], str]:
    """Encodings to try, in order, for a record under Encoding.AUTO, and the declared one (whose error is
    reported when none decodes): the rules in the module docstring."""
    if dialect == "marc21":
        if leader[9] == "a":
            return ["utf-8"], "utf-8"
        if data.isascii() or _ESC in data:
            return ["marc-8"], "marc-8"
        return ["utf-8", "marc-8"], "marc-8"
    declared = "utf-8"
    a = _unimarc_100(f100)
    if a is not None and a[26:30].strip():
        declared = _UNIMARC_CHARSETS.get(a[26:28].decode("latin-1"), "iso-8859-1")
    if data.isascii():
        return ["utf-8"], declared
    out = ["utf-8", "gb18030"]
    if declared not in out:
        out.append(declared)
    return out, declared


def _decoded(chunk: bytes, lead: str, base: int, entries: list[_Entry], codec: str) -> Record:
    if codec == "marc-8":
        return _record(lead, _decode_fields_marc8(chunk, base, entries))
    fields, exact = _decode(chunk, base, entries, codec)
    if not (exact and codec == "utf-8"):
        return _record(lead, fields)
    rec = _record(lead, fields, _Utf8Record)
    rec.iso2709 = chunk if chunk[9] == 0x61 else chunk[:9] + b"a" + chunk[10:]
    return rec


def utf8_iso2709(raw: RawRecord) -> bytes:
    """The record as UTF-8 ISO 2709, as ``raw.record.as_marc()`` gives it (leader/09 'a'); the file's own bytes
    when they already are exactly that, which saves re-encoding every field of a UTF-8 file."""
    rec = raw.record
    return rec.iso2709 if type(rec) is _Utf8Record else rec.as_marc()


def _parse_chunk(
    chunk: bytes, forced_dialect: str | None, file_dialect: str, codec: str | None
) -> tuple[Record, str, str]:
    lead, base, entries = _structure(chunk)
    f100 = None
    if forced_dialect:
        dialect = forced_dialect
    else:
        tags = {entry[0] for entry in entries}
        if b"245" in tags:
            dialect = "marc21"
        else:
            f100 = _field_100(chunk, base, entries) if b"100" in tags else None
            dialect = _dialect_of(tags, f100, b"200" in tags) or file_dialect
    if codec is not None:
        return _decoded(chunk, lead, base, entries, codec), dialect, codec
    if dialect == "unimarc" and f100 is None:
        f100 = _field_100(chunk, base, entries)
    tried, declared = _candidates(dialect, lead, chunk[base:], f100)
    errors: dict[str, _Undecodable] = {}
    for enc in tried:
        try:
            return _decoded(chunk, lead, base, entries, enc), dialect, enc
        except _Undecodable as e:
            errors[enc] = e
    report = errors.get(declared) or errors[tried[0]]
    if len(tried) > 1:
        raise _Undecodable(f"{report} (none of {', '.join(tried)} decodes the record)")
    raise report


def _peek_control_number(chunk: bytes) -> str | None:
    """Best-effort 001 of a record that failed to parse, for the rejection report."""
    try:
        base = int(chunk[12:17])
        directory = chunk[24 : base - 1]
        for i in range(0, len(directory) - 11, 12):
            if directory[i : i + 3] == b"001":
                start = base + int(directory[i + 7 : i + 12])
                raw = chunk[start : start + int(directory[i + 3 : i + 7])].rstrip(b"\x1e\x1d")
                value = raw.decode("utf-8", "replace").strip()
                return value or None
    except (ValueError, IndexError):
        return None
    return None


def _looks_like_record(data: bytes) -> bool:
    return data[:5].isdigit()


def _diagnose(bad: bytes, *, terminated: bool, before_record: bool) -> str:
    """Why a framed chunk (or the unterminated tail of the file) is not a record."""
    if terminated and len(bad) == 1:
        return "empty record: a record terminator with no data (0-byte record)"
    head = bad[:5]
    if not _looks_like_record(bad):
        if all(0x20 <= c < 0x7F for c in head):
            return f"record length {head.decode('ascii')!r} is not numeric"
        return f"unparseable data ({len(bad)} bytes): no record leader, starts with {head!r}"
    declared = int(head)
    size = len(bad)
    if declared == 0:
        return "record length in the leader is 00000"
    if not terminated and not before_record:
        if declared > size:
            return f"truncated record: the leader declares {declared} bytes but the file ends after {size}"
        return f"record without a record terminator at the end of the file ({size} bytes)"
    if before_record:
        kind = "truncated record" if declared > size else "wrong record length"
        return f"{kind}: the leader declares {declared} bytes but the next record starts after {size}"
    return f"wrong record length: the leader declares {declared} bytes but the record terminator ends it at {size}"


def _embedded_start(chunk: bytes) -> int | None:
    """Start of a well-formed record inside a bad chunk: a leader whose length runs exactly to the chunk's end."""
    size = len(chunk)
    for m in _LEADERISH.finditer(chunk, 1):
        q = m.start()
        if int(m.group(1)) == size - q:
            return q
    return None


_Item = tuple[int, Record | None, str, str, str | None, str | None]  # offset, record, dialect, enc, reason, 001


class _Junk:
    """Consecutive bytes that are not records (random data, stray terminators): reported once, as one rejection."""

    def __init__(self) -> None:
        self.start: int | None = None
        self.parts = 0
        self.reason = ""
        self.control_number: str | None = None

    def add(self, offset: int, reason: str, data: bytes = b"") -> None:
        if self.start is None:
            self.start, self.parts, self.reason = offset, 0, reason
            self.control_number = _peek_control_number(data) if data else None
        self.parts += 1

    def flush(self, end: int) -> Iterator[_Item]:
        if self.start is not None:
            if self.parts == 1:
                yield (self.start, None, "", "", self.reason, self.control_number)
            else:
                yield (self.start, None, "", "", f"unparseable data ({end - self.start} bytes): no record found", None)
            self.start = None


def _iso2709(
    f: IO[bytes], head: bytes, forced_dialect: str | None, file_dialect: str, codec: str | None
) -> Iterator[_Item]:
    buf, base, p, eof = head, 0, 0, False
    if buf.startswith(codecs.BOM_UTF8):  # some Windows tools write one before binary MARC
        p = 3
    junk = _Junk()
    search_from = 0

    def bad(offset: int, chunk: bytes, reason: str) -> _Item:
        return (offset, None, "", "", reason, _peek_control_number(chunk))

    def good(offset: int, chunk: bytes) -> _Item:
        try:
            rec, dialect, enc = _parse_chunk(chunk, forced_dialect, file_dialect, codec)
        except _Bad as e:
            return bad(offset, chunk, str(e))
        return (offset, rec, dialect, enc, None, None)

    while True:
        p = _SEPARATORS.match(buf, p).end()
        end = buf.find(b"\x1d", max(p, search_from))
        if end < 0:
            search_from = len(buf)
            if not eof:
                if len(buf) - p > _WINDOW:  # no terminator in sight: junk; keep what could still start a record
                    junk.add(base + p, f"unparseable data: no record terminator within {MAX_RECORD} bytes")
                    junk.parts += 1  # report the whole stretch by its size
                    p = len(buf) - MAX_RECORD
                data = f.read(BLOCK)
                if data:
                    base += p
                    buf, search_from, p = buf[p:] + data, search_from - p, 0
                else:
                    eof = True
                continue
            tail = buf[p:]
            if tail and not _looks_like_record(tail):
                junk.add(base + p, _diagnose(tail, terminated=False, before_record=False))
                tail = b""
            yield from junk.flush(base + len(buf))
            if tail:
                yield bad(base + p, tail, _diagnose(tail, terminated=False, before_record=False))
            return
        chunk = buf[p : end + 1]
        offset = base + p
        p = search_from = end + 1
        head5 = chunk[:5]
        if head5.isdigit() and int(head5) == len(chunk):
            yield from junk.flush(offset)
            yield good(offset, chunk)
            continue
        q = _embedded_start(chunk) if len(chunk) > 25 else None
        prefix = chunk if q is None else chunk[:q]
        reason = _diagnose(prefix, terminated=q is None, before_record=q is not None)
        if _looks_like_record(prefix):
            yield from junk.flush(offset)
            yield bad(offset, prefix, reason)
        else:
            junk.add(offset, reason, prefix)
            if q is None:
                continue
            yield from junk.flush(offset + q)
        if q is not None:
            yield good(offset + q, chunk[q:])


# --------------------------------------------------------------------------- MARCXML


def _tag_ok(tag: Any) -> bool:
    return isinstance(tag, str) and len(tag) == 3 and tag.isascii() and tag.isalnum()


def _guess_dialect_fields(fields: list[Field], hint: str | None) -> str | None:
    tags = {f.tag for f in fields}
    if "245" in tags:
        return "marc21"
    if "200" in tags:
        for f in fields:
            if f.tag == "100" and not f.control_field:
                a = f.get("a") or ""
                if len(a) >= 36 and a[:8].isdigit():
                    return "unimarc"
    if hint:
        return hint
    if "008" in tags:
        return "marc21"
    return None


class _XmlRecords:
    """expat handlers building pymarc records from MARCXML (any namespace prefix, or none)."""

    def __init__(self, parser: Any, forced_dialect: str | None, file_dialect: str, encoding: str) -> None:
        self.parser = parser
        self.forced_dialect = forced_dialect
        self.file_dialect = file_dialect
        self.encoding = encoding
        self.out: list[_Item] = []
        self.in_record = False
        self.text: list[str] | None = None
        self.problem: str | None = None

    @staticmethod
    def _local(name: str) -> str:
        return name.rpartition(" ")[2]

    def start(self, name: str, attrs: dict[str, str]) -> None:
        local = self._local(name)
        if local == "record":
            self.in_record = True
            self.offset = self.parser.CurrentByteIndex
            self.leader: str | None = None
            self.fields: list[Field] = []
            self.problem = None
            self.hint = None
            fmt = (attrs.get("format") or attrs.get("type") or "").lower()
            if "unimarc" in fmt:
                self.hint = "unimarc"
            elif "marc21" in fmt:
                self.hint = "marc21"
            return
        if not self.in_record:
            return
        if local in ("leader", "controlfield", "subfield"):
            self.text = []
            if local == "controlfield":
                self.tag = attrs.get("tag")
            elif local == "subfield":
                self.code = attrs.get("code")
        elif local == "datafield":
            tag, i1, i2 = attrs.get("tag"), attrs.get("ind1", " ") or " ", attrs.get("ind2", " ") or " "
            self.subfields: list[Subfield] = []
            self.tag = tag
            if self.problem is None:
                if not _tag_ok(tag):
                    self.problem = f"datafield with invalid tag {tag!r}"
                elif len(i1) != 1 or len(i2) != 1 or not (i1 + i2).isascii() or not (i1 + i2).isprintable():
                    self.problem = f"field {tag}: invalid indicators {i1 + i2!r}"
            self.ind = Indicators(i1, i2)

    def chars(self, data: str) -> None:
        if self.text is not None:
            self.text.append(data)

    def end(self, name: str) -> None:
        if not self.in_record:
            return
        local = self._local(name)
        if local == "subfield":
            code = self.code
            if (not code or len(code) != 1) and self.problem is None:
                self.problem = f"field {self.tag}: invalid subfield code {code!r}"
            self.subfields.append(_new_tuple(Subfield, (code or "?", "".join(self.text or ()))))
            self.text = None
        elif local == "datafield":
            self.fields.append(_data_field(self.tag or "???", self.ind, self.subfields))
        elif local == "controlfield":
            if not _tag_ok(self.tag) and self.problem is None:
                self.problem = f"controlfield with invalid tag {self.tag!r}"
            self.fields.append(_control_field(self.tag or "???", "".join(self.text or ())))
            self.text = None
        elif local == "leader":
            self.leader = "".join(self.text or ())
            self.text = None
        elif local == "record":
            self.in_record = False
            self.out.append(self._finish())

    def _finish(self) -> _Item:
        cn = next((f.data for f in self.fields if f.tag == "001" and f.control_field), None)
        cn = cn.strip() or None if cn else None
        if self.problem:
            return (self.offset, None, "", "", self.problem, cn)
        if self.leader is None:
            return (self.offset, None, "", "", "record has no leader", cn)
        if len(self.leader) != 24 or not self.leader.isascii():
            return (self.offset, None, "", "", f"leader is {len(self.leader)} characters, not 24 ASCII", cn)
        if not self.fields:
            return (self.offset, None, "", "", "record has no fields", cn)
        dialect = self.forced_dialect or _guess_dialect_fields(self.fields, self.hint) or self.file_dialect
        return (self.offset, _record(self.leader, self.fields), dialect, self.encoding, None, None)


_EXPAT_NATIVE = {"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1", "utf-16"}


def _xml(
    f: IO[bytes], head: bytes, forced_dialect: str | None, file_dialect: str, codec: str | None
) -> Iterator[_Item]:
    declared = _XML_DECL_ENCODING.search(head[:512])
    doc_encoding = declared.group(1).decode("ascii").lower() if declared else "utf-8"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        doc_encoding = "utf-16"
    source = codec or doc_encoding
    transcoder = None
    if codec is not None or source not in _EXPAT_NATIVE:
        # expat reads few encodings natively: transcode to UTF-8 ourselves (offsets then count UTF-8 bytes,
        # and the records' encoding is the source's)
        transcoder = codecs.getincrementaldecoder("utf-8-sig" if source in ("utf-8", "utf8") else source)()
    parser = expat.ParserCreate(encoding="utf-8" if transcoder else None, namespace_separator=" ")
    parser.buffer_text = True
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)

    def no_entities(*_args: Any) -> None:
        raise ValueError("entity declarations are not accepted in MARCXML")

    parser.EntityDeclHandler = no_entities
    handler = _XmlRecords(parser, forced_dialect, file_dialect, source)
    parser.StartElementHandler = handler.start
    parser.EndElementHandler = handler.end
    parser.CharacterDataHandler = handler.chars

    data, final = head, False
    while True:
        try:
            if transcoder is not None:
                parser.Parse(transcoder.decode(data, final).encode("utf-8"), final)
            else:
                parser.Parse(data, final)
        except (expat.ExpatError, ValueError, UnicodeDecodeError) as e:
            yield from handler.out
            offset = max(parser.CurrentByteIndex, 0)
            yield (offset, None, "", "", f"XML is not well-formed, reading stopped: {e}", None)
            return
        yield from handler.out
        handler.out.clear()
        if final:
            return
        data = f.read(BLOCK)
        final = not data


# --------------------------------------------------------------------------- MARC-in-JSON


class JsonValueError(ValueError):
    """A JSON value in a stream that could not be parsed (the stream goes on)."""


_JSON_SKIP = re.compile(r"[\s,\[\]]*")
_JSON_CAP = 16 << 20  # one JSON value may not exceed this many characters


def iter_json_values(f: IO[bytes], head: bytes = b"", encoding: str = "utf-8") -> Iterator[tuple[int, Any]]:
    """Stream the top-level values of NDJSON, a JSON array, or concatenated JSON, with their byte offsets.

    Array brackets and commas between values are skipped, so ``[{...},{...}]`` and one object per line read the
    same. A value that does not parse is yielded as a ``JsonValueError`` and reading resumes at the next line that
    starts with '{'.
    """
    decoder = codecs.getincrementaldecoder("utf-8-sig" if encoding in ("utf-8", "utf8") else encoding)("strict")
    raw_decode = json.JSONDecoder(strict=False).raw_decode
    buf, i, eof = decoder.decode(head, False), 0, False
    byte_base = 0  # byte offset of buf[char_base]
    char_base = 0
    if encoding in ("utf-8", "utf8") and head.startswith(codecs.BOM_UTF8):
        byte_base = 3

    def offset_of(k: int) -> int:
        nonlocal byte_base, char_base
        byte_base += len(buf[char_base:k].encode(encoding))
        char_base = k
        return byte_base

    def more() -> bool:
        nonlocal buf, i, eof, char_base
        if eof:
            return False
        data = f.read(BLOCK)
        eof = not data
        offset_of(i)
        buf, char_base, i = buf[i:] + decoder.decode(data, eof), 0, 0
        return True

    while True:
        i = _JSON_SKIP.match(buf, i).end()
        if i >= len(buf):
            if not more():
                return
            continue
        try:
            value, end = raw_decode(buf, i)
        except json.JSONDecodeError as e:
            if not eof and buf.find("\n", e.pos) < 0 and len(buf) - i < _JSON_CAP:
                more()
                continue
            start = offset_of(i)
            # resume at the next line that opens an object no deeper than the bad one (NDJSON: column 0), so a
            # pretty-printed record's nested objects are not mistaken for records
            indent = i - (buf.rfind("\n", 0, i) + 1)
            resync = re.compile(rf"\n[ \t]{{0,{indent}}}\{{")
            m = resync.search(buf, i + 1)
            while m is None and not eof and len(buf) - i < _JSON_CAP:
                more()
                m = resync.search(buf, i + 1)
            yield start, JsonValueError(f"malformed JSON: {e.msg} (line {e.lineno} column {e.colno})")
            if m is None:
                return
            i = m.start() + 1
            continue
        if end >= len(buf) and not eof:  # a bare number or literal may go on in the next block
            more()
            continue
        yield offset_of(i), value
        i = end
        if i > BLOCK and i > len(buf) // 2:
            offset_of(i)
            buf, char_base, i = buf[i:], 0, 0


def _json_record(obj: Any) -> tuple[Record | None, str | None, str | None]:
    """MARC-in-JSON object -> (record, reason, control number)."""
    if not isinstance(obj, dict):
        return None, f"not a MARC-in-JSON object but a JSON {type(obj).__name__}", None
    leader, raw_fields = obj.get("leader"), obj.get("fields")
    if not isinstance(raw_fields, list):
        return None, "no 'fields' list", None
    fields: list[Field] = []
    cn = None
    for item in raw_fields:
        if not isinstance(item, dict) or len(item) != 1:
            return None, f"field entry {item!r:.60} is not a one-key object", cn
        ((tag, value),) = item.items()
        if not _tag_ok(tag):
            return None, f"invalid tag {tag!r}", cn
        if isinstance(value, str):
            fields.append(_control_field(tag, value))
            if tag == "001":
                cn = value.strip() or None
            continue
        if not isinstance(value, dict) or not isinstance(value.get("subfields", []), list):
            return None, f"field {tag}: not a control field string or a data field object", cn
        i1, i2 = value.get("ind1", " ") or " ", value.get("ind2", " ") or " "
        if not (isinstance(i1, str) and isinstance(i2, str)) or len(i1) != 1 or len(i2) != 1:
            return None, f"field {tag}: invalid indicators {i1!r} {i2!r}", cn
        if not (i1 + i2).isascii() or not (i1 + i2).isprintable():
            return None, f"field {tag}: invalid indicators {i1 + i2!r}", cn
        subfields = []
        for sub in value.get("subfields", []):
            if not isinstance(sub, dict) or len(sub) != 1:
                return None, f"field {tag}: subfield {sub!r:.60} is not a one-key object", cn
            ((code, text),) = sub.items()
            if len(code) != 1 or not isinstance(text, str):
                return None, f"field {tag}: invalid subfield {code!r}", cn
            subfields.append(_new_tuple(Subfield, (code, text)))
        fields.append(_data_field(tag, Indicators(i1, i2), subfields))
    if not isinstance(leader, str) or len(leader) != 24 or not leader.isascii():
        return None, "missing or malformed leader (must be 24 ASCII characters)", cn
    if not fields:
        return None, "record has no fields", cn
    return _record(leader, fields), None, None


def _marcjson(
    f: IO[bytes], head: bytes, forced_dialect: str | None, file_dialect: str, codec: str | None
) -> Iterator[_Item]:
    encoding = codec or "utf-8"
    try:
        for offset, value in iter_json_values(f, head, encoding):
            if isinstance(value, JsonValueError):
                yield (offset, None, "", "", str(value), None)
                continue
            rec, reason, cn = _json_record(value)
            if rec is None:
                yield (offset, None, "", "", reason, cn)
                continue
            dialect = forced_dialect or _guess_dialect_fields(rec.fields, None) or file_dialect
            yield (offset, rec, dialect, encoding, None, None)
    except UnicodeDecodeError as e:
        yield (0, None, "", "", f"JSON text is not valid {encoding}, reading stopped: {e.reason}", None)


# --------------------------------------------------------------------------- detection and the entry point


def _strip_head(head: bytes) -> bytes:
    if head.startswith(codecs.BOM_UTF8):
        head = head[3:]
    return head.lstrip(b" \t\r\n\x00")


def _iso_dialect(head: bytes) -> Format:
    """MARC21 or UNIMARC from the first ISO 2709 record in ``head`` (complete or not)."""
    try:
        base = int(head[12:17])
        directory = head[24 : min(base - 1, len(head))]
        tags: dict[bytes, bytes | None] = {}
        for tag, length_b, start_b in _ENTRY.findall(directory):
            start = base + int(start_b)
            stop = start + int(length_b)
            tags.setdefault(tag, head[start:stop] if stop <= len(head) else None)
        guess = _dialect_of(tags, tags.get(b"100"), b"200" in tags)
    except ValueError:
        guess = None
    if guess == "unimarc":
        return Format.UNIMARC
    if guess is None and head[20:24] == b"450 ":
        return Format.UNIMARC
    return Format.MARC21


def detect_format(head: bytes) -> Format:
    """The format of a MARC file from its first bytes (a few KiB; 64 KiB is plenty).

    '<' -> MARCXML; '{' or '[' -> MARC-in-JSON; five digits and a leader -> ISO 2709, where the first record
    decides MARC21 (245 or 008) or UNIMARC (no 245, a 200 title and a 100 $a of 36+ characters starting with a
    date; failing that a "450 " leader/20-23). Raises ValueError for anything else (including an empty head).
    """
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return Format.MARCXML  # UTF-16 BOM: only XML comes that way
    body = _strip_head(head)
    if not body:
        raise ValueError("empty input")
    if body[:1] == b"<":
        return Format.MARCXML
    if body[:1] in (b"{", b"["):
        return Format.MARCJSON
    if len(body) >= 24 and _LEADER_OK.match(body[:24]):
        return _iso_dialect(body)
    raise ValueError(f"not a MARC file I recognise (starts with {body[:16]!r})")


def read(
    path_or_fileobj: str | os.PathLike[str] | IO[bytes] | bytes,
    *,
    format: Format | str = Format.AUTO,
    encoding: Encoding | str = Encoding.AUTO,
    library: str | None = None,
) -> Iterator[RawRecord | Rejection]:
    """Stream the records of a MARC file: a ``RawRecord`` per good record, a ``Rejection`` per bad one, in order.

    ``path_or_fileobj`` is a path, a binary file object (left open) or bytes. ``format``/``encoding`` force what
    is otherwise detected (see the module docstring). ``library`` is carried on every result for reports.
    """
    fmt = Format(format)
    enc = Encoding(encoding)
    if isinstance(path_or_fileobj, bytes | bytearray | memoryview):
        return _read(io.BytesIO(bytes(path_or_fileobj)), fmt, enc, library)
    if isinstance(path_or_fileobj, str | os.PathLike):
        f = open(path_or_fileobj, "rb")  # noqa: SIM115 - closed by _closing when the stream ends or is dropped
        return _closing(_read(f, fmt, enc, library), f)
    return _read(path_or_fileobj, fmt, enc, library)


def _closing(items: Iterator[RawRecord | Rejection], f: IO[bytes]) -> Iterator[RawRecord | Rejection]:
    try:
        yield from items
    finally:
        f.close()


def _read(f: IO[bytes], fmt: Format, enc: Encoding, library: str | None) -> Iterator[RawRecord | Rejection]:
    head = f.read(HEAD)
    if isinstance(head, str):
        raise TypeError("read() needs a binary file object (open the file with 'rb')")
    detected: Format | None = None
    try:
        detected = detect_format(head)
    except ValueError:
        if not _strip_head(head):
            return  # empty (or blank) file: no records
    codec = None if enc is Encoding.AUTO else enc.value
    forced_dialect = {Format.MARC21: "marc21", Format.UNIMARC: "unimarc"}.get(fmt)
    file_dialect = "unimarc" if detected is Format.UNIMARC else "marc21"
    kind = fmt if fmt is not Format.AUTO else (detected or Format.MARC21)
    if codec == "marc-8" and kind in (Format.MARCXML, Format.MARCJSON):
        raise ValueError("MARC-8 is an ISO 2709 encoding; MARCXML and MARC-in-JSON are Unicode text")
    source: Callable[..., Iterator[_Item]]
    if kind is Format.MARCXML:
        source = _xml
    elif kind is Format.MARCJSON:
        source = _marcjson
    else:
        source = _iso2709
    items = source(f, head, forced_dialect, file_dialect, codec)
    for position, (offset, rec, dialect, used, reason, cn) in enumerate(items):
        if rec is not None:
            yield RawRecord(position, offset, rec, dialect, used, library)
        else:
            log.debug("rejected record %d at byte %d (%s): %s", position, offset, library, reason)
            yield Rejection(position, offset, reason or "unknown problem", cn, library)
