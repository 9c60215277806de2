"""Items (copies) of a member library: read from the item field of its bibliographic records, or from a feed.

Each integrated library system puts items in its own local field. ``HoldingsConfig`` names the field and the
subfields; the presets below cover the systems of the federation's members:

``MARC21_852``  MARC21 holdings 852 (Aleph, Alma, Sierra exports): $p barcode, $b sublocation/collection
                (else $a), call number $k prefix + $h classification + $i item part + $m suffix; no item type.
``MARC21_949``  Innovative (Millennium/Sierra) item load field 949: $i barcode, $l location, $a call number,
                $t item type, $s item status code ('-' available, 'm' missing, 'o' library use only, ...).
``MARC21_952``  Koha MARC21: $p barcode, $a home branch, $o call number, $y item type, $7 not-for-loan
                (0 = loanable), $1 lost, $0 withdrawn, $q due date (on loan).
``CNMARC_905``  CALIS union catalogue / 汇文 (Libsys) and the dt1000 lineage, "905 馆藏信息": $a holding
                library code, $b 登录号 (accession number, used as the barcode), $c 馆藏地/排架区 (location),
                $d 分类号 (class number, copied from 690 $a) and $e 种次号/书次号 (book number): the call number
                (索书号) is "$d/$e", e.g. I247.55/12. No item type or status in 905.
``CNMARC_995``  Koha UNIMARC / the French "Recommandation 995", which Chinese Koha sites and several domestic
                systems (图创 Interlib exports included, but check a sample: the field is local) follow: $f barcode,
                $b home branch (else $e shelving location), $k call number, $r item type, $o not-for-loan,
                $2 lost, $0 withdrawn, $n due date.

A member whose system departs from its preset gets its own ``HoldingsConfig``. Item feeds (``items_from_csv``,
``items_from_json``) carry the columns control_number, barcode, library, location, call_number, item_type,
status; they stream, so a feed of millions of items stays small in memory.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pymarc import Field, Record

from library.catalog.marc import JsonValueError, iter_json_values
from library.catalog.records import BibRecord, Item

__all__ = [
    "CNMARC_905",
    "CNMARC_995",
    "MARC21_852",
    "MARC21_949",
    "MARC21_952",
    "PRESETS",
    "FEED_COLUMNS",
    "HoldingsConfig",
    "items_from_csv",
    "items_from_json",
    "normalise_status",
    "with_items",
]

log = logging.getLogger(__name__)

STATUS_MAX = 20  # the item table's status column


@dataclass(frozen=True)
class HoldingsConfig:
    """Where a system keeps items in a bibliographic record. Subfield arguments are codes, several allowed.

    ``barcode``, ``location`` and ``item_type``: the first of the listed subfields that is present and not
    blank wins. ``call_number``: every listed subfield present, in the order listed, joined with
    ``call_number_separator``. ``status``: a subfield with a circulation status or not-for-loan code, read
    through ``status_values`` (this system's own codes) and then ``normalise_status``; ``lost``, ``withdrawn``
    (a value other than empty or 0 means so) and ``on_loan`` (a due date) take precedence over it.
    """

    tag: str
    barcode: str
    location: str
    call_number: str
    item_type: str
    status: str | None = None
    lost: str | None = None
    withdrawn: str | None = None
    on_loan: str | None = None
    call_number_separator: str = " "
    status_values: tuple[tuple[str, str], ...] = ()
    name: str = ""

    def items(self, record: Record, library: str) -> tuple[Item, ...]:
        """The items in ``record``'s ``tag`` fields; fields without a barcode are skipped."""
        return self.items_in([f for f in record.fields if f.tag == self.tag], library)

    def items_in(self, fields: Iterable[Field], library: str) -> tuple[Item, ...]:
        """The items in ``fields`` (the record's ``tag`` fields, already picked out)."""
        out = []
        for field in fields:
            if field.control_field:
                continue
            values: dict[str, str] = {}
            for code, value in field.subfields:
                if code not in values:
                    value = value.strip()
                    if value:
                        values[code] = value
            barcode = _first(values, self.barcode)
            if not barcode:
                continue
            call_number = self.call_number_separator.join([values[c] for c in self.call_number if c in values])
            out.append(
                Item(
                    barcode=barcode,
                    library=library,
                    location=_first(values, self.location),
                    call_number=call_number or None,
                    item_type=_first(values, self.item_type),
                    status=self._status(values, self._local_statuses),
                )
            )
        return tuple(out)

    @functools.cached_property
    def _local_statuses(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.status_values}

    def _status(self, values: dict[str, str], local: dict[str, str]) -> str:
        def flagged(code: str | None) -> bool:
            return bool(code) and values.get(code, "0") not in ("0", "")

        if flagged(self.withdrawn):
            return "withdrawn"
        if flagged(self.lost):
            return "lost"
        if self.on_loan and values.get(self.on_loan):
            return "on_loan"
        if self.status and self.status in values:
            value = values[self.status]
            return local.get(value.lower()) or normalise_status(value)
        return "available"


def _first(values: dict[str, str], codes: str) -> str | None:
    for c in codes:
        if c in values:
            return values[c]
    return None


MARC21_852 = HoldingsConfig(
    tag="852", barcode="p", location="ba", call_number="khim", item_type="", name="MARC21 852 holdings"
)
MARC21_949 = HoldingsConfig(
    tag="949",
    barcode="i",
    location="l",
    call_number="a",
    item_type="t",
    status="s",
    status_values=(
        ("-", "available"),
        ("m", "missing"),
        ("o", "not_for_loan"),
        ("t", "in_transit"),
        ("w", "withdrawn"),
        ("d", "damaged"),
        ("$", "lost"),
        ("n", "lost"),
        ("z", "missing"),
        ("p", "on_order"),
        ("!", "on_hold"),
    ),
    name="Innovative 949 item load",
)
MARC21_952 = HoldingsConfig(
    tag="952",
    barcode="p",
    location="a",
    call_number="o",
    item_type="y",
    status="7",
    lost="1",
    withdrawn="0",
    on_loan="q",
    name="Koha MARC21 952",
)
CNMARC_905 = HoldingsConfig(
    tag="905",
    barcode="b",
    location="ca",
    call_number="de",
    item_type="",
    call_number_separator="/",
    name="CALIS / 汇文 905 馆藏信息",
)
CNMARC_995 = HoldingsConfig(
    tag="995",
    barcode="f",
    location="be",
    call_number="k",
    item_type="r",
    status="o",
    lost="2",
    withdrawn="0",
    on_loan="n",
    name="Koha UNIMARC / Recommandation 995",
)
PRESETS = {
    "marc21_852": MARC21_852,
    "marc21_949": MARC21_949,
    "marc21_952": MARC21_952,
    "cnmarc_905": CNMARC_905,
    "cnmarc_995": CNMARC_995,
}

_STATUS_WORDS = {
    "": "available",
    "0": "available",
    "available": "available",
    "in": "available",
    "on shelf": "available",
    "在架": "available",
    "可借": "available",
    "在馆": "available",
    "on loan": "on_loan",
    "on_loan": "on_loan",
    "checked out": "on_loan",
    "loaned": "on_loan",
    "借出": "on_loan",
    "已借出": "on_loan",
    "lost": "lost",
    "丢失": "lost",
    "遗失": "lost",
    "missing": "missing",
    "缺失": "missing",
    "下落不明": "missing",
    "withdrawn": "withdrawn",
    "剔除": "withdrawn",
    "注销": "withdrawn",
    "damaged": "damaged",
    "破损": "damaged",
    "not for loan": "not_for_loan",
    "not_for_loan": "not_for_loan",
    "reference": "not_for_loan",
    "library use only": "not_for_loan",
    "不外借": "not_for_loan",
    "阅览": "not_for_loan",
    "in transit": "in_transit",
    "in_transit": "in_transit",
    "在途": "in_transit",
    "on order": "on_order",
    "on_order": "on_order",
    "ordered": "on_order",
    "订购中": "on_order",
    "-1": "on_order",  # Koha's default NOT_LOAN value -1 is "Ordered"
    "on hold": "on_hold",
    "on_hold": "on_hold",
    "预约": "on_hold",
}


def normalise_status(value: str | None) -> str:
    """A status from a MARC subfield or a feed, in our vocabulary: available, on_loan, lost, missing, withdrawn,
    damaged, not_for_loan, in_transit, on_order, on_hold. Numeric not-for-loan codes other than 0/-1 mean
    not_for_loan; anything else unknown is kept, lower-cased with underscores (at most 20 characters)."""
    text = " ".join((value or "").split()).lower()
    known = _STATUS_WORDS.get(text)
    if known:
        return known
    if text.lstrip("-").isdigit():
        return "not_for_loan"
    return text.replace(" ", "_")[:STATUS_MAX]


# --------------------------------------------------------------------------- feeds

FEED_COLUMNS = ("control_number", "barcode", "library", "location", "call_number", "item_type", "status")


def _item(row: dict[str, object], library: str | None, where: str) -> tuple[str, Item] | None:
    def text(key: str) -> str | None:
        v = row.get(key)
        if v is None:
            return None
        v = str(v).strip()
        return v or None

    control_number, barcode = text("control_number"), text("barcode")
    member = text("library") or library
    if not control_number or not barcode or not member:
        missing = [
            k for k, v in (("control_number", control_number), ("barcode", barcode), ("library", member)) if not v
        ]
        log.warning("item feed %s: skipped, no %s", where, ", ".join(missing))
        return None
    return control_number, Item(
        barcode=barcode,
        library=member,
        location=text("location"),
        call_number=text("call_number"),
        item_type=text("item_type"),
        status=normalise_status(text("status")),
    )


def _sniff_encoding(head: bytes) -> str:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # not merely a character cut at the end of the sample
            return "gb18030"
    return "utf-8-sig"


def items_from_csv(
    path: str | os.PathLike[str],
    *,
    library: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
) -> Iterator[tuple[str, Item]]:
    """Stream (control_number, Item) from a CSV/TSV item feed with a header row.

    Column names are matched case-insensitively; ``library`` fills a missing library column. The encoding is
    UTF-8 (with or without BOM) unless the first 64 KiB are not, then GB18030 (spreadsheets saved in China);
    the delimiter is sniffed from the header (tab, semicolon or comma). Rows without a control number, a
    barcode or a library are skipped with a warning.
    """
    with open(path, "rb") as raw:
        head = raw.read(1 << 16)
        raw.seek(0)
        enc = encoding or _sniff_encoding(head)
        text = io.TextIOWrapper(raw, encoding=enc, newline="")
        header_line = text.readline()
        if not header_line:
            return
        delim = delimiter or (
            "\t" if "\t" in header_line else ";" if header_line.count(";") > header_line.count(",") else ","
        )
        header = [h.strip().lower() for h in next(csv.reader([header_line], delimiter=delim))]
        for number, values in enumerate(csv.reader(text, delimiter=delim), start=2):
            if not any(v.strip() for v in values):
                continue
            found = _item(dict(zip(header, values, strict=False)), library, f"{os.fspath(path)}:{number}")
            if found:
                yield found


def items_from_json(
    path: str | os.PathLike[str], *, library: str | None = None, encoding: str = "utf-8"
) -> Iterator[tuple[str, Item]]:
    """Stream (control_number, Item) from a JSON item feed: an array of objects, or one object per line."""
    with open(path, "rb") as raw:
        for offset, value in iter_json_values(raw, raw.read(1 << 16), encoding):
            where = f"{os.fspath(path)} byte {offset}"
            if isinstance(value, JsonValueError) or not isinstance(value, dict):
                log.warning(
                    "item feed %s: skipped, %s", where, value if isinstance(value, JsonValueError) else "not an object"
                )
                continue
            found = _item({k.lower(): v for k, v in value.items()}, library, where)
            if found:
                yield found


def with_items(bib: BibRecord, items: Iterable[Item]) -> BibRecord:
    """``bib`` with ``items`` added (a feed's items for its control number); barcodes already there win."""
    seen = {(i.library, i.barcode) for i in bib.items}
    extra = tuple(i for i in items if (i.library, i.barcode) not in seen)
    return dataclasses.replace(bib, items=bib.items + extra) if extra else bib
