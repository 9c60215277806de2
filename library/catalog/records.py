"""The catalogue's own typed bibliographic model, parsed at the edge from MARC21 or UNIMARC/CNMARC.

Nothing past the ingest sees a pymarc object: the mapping from either dialect
lands here, and the store, the clusters and the search index work on these.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Name:
    name: str
    role: str = "author"  # author, editor, translator, contributor, corporate, ...
    corporate: bool = False
    vernacular: str | None = None  # MARC21 880 pair, when the heading is romanised


@dataclasses.dataclass(frozen=True)
class Item:
    barcode: str
    library: str  # member code
    location: str | None = None  # branch / service point code or shelving location
    call_number: str | None = None
    item_type: str | None = None  # book, periodical, av, ...
    status: str = "available"


@dataclasses.dataclass(frozen=True)
class BibRecord:
    control_number: str  # 001, the library's own record id
    dialect: str  # "marc21" or "unimarc"
    title: str
    subtitle: str | None = None
    responsibility: str | None = None  # 245 $c / 200 $f
    title_vernacular: str | None = None  # MARC21 880 paired with 245
    names: tuple[Name, ...] = ()
    publisher: str | None = None
    place: str | None = None
    year: int | None = None
    edition: str | None = None
    isbns: tuple[str, ...] = ()  # normalised ISBN-13, validated
    invalid_isbns: tuple[str, ...] = ()  # as found, for the report
    issns: tuple[str, ...] = ()
    language: str | None = None  # ISO 639-2/B, e.g. chi, eng
    subjects: tuple[str, ...] = ()
    clc: tuple[str, ...] = ()  # Chinese Library Classification numbers
    classifications: tuple[tuple[str, str], ...] = ()  # (scheme, number) for others (ddc, lcc, ...)
    series: tuple[str, ...] = ()
    physical: str | None = None  # 300 / 215
    format: str = "book"  # book, serial, map, music, video, audio, electronic, ...
    items: tuple[Item, ...] = ()
    deleted: bool = False  # leader/05 = d
    version: str | None = None  # 005, for "a newer version replaces the old one"
    title_romanised: str | None = None  # MARC21 245 when romanised beside a vernacular 880; CNMARC 200 $9
    date_entered: str | None = None  # YYYY-MM-DD: MARC21 008/00-05, UNIMARC 100 $a/0-7

    @property
    def first_author(self) -> str | None:
        for n in self.names:
            if n.role == "author":
                return n.name
        return self.names[0].name if self.names else None
