"""MARC21 and UNIMARC/CNMARC -> ``BibRecord``: the one place that knows both dialects' tags.

MARC21
    title 245 $a (+ $n $p), subtitle $b, responsibility $c, ISBD closing punctuation (" /", " :", " ;", " =",
    ",", a final ".") stripped. An 880 paired through $6 ("245 $6 880-01" <-> "880 $6 245-01/$1") gives
    ``title_vernacular``; when the 245 is romanised (Latin script) and the 880 is not, the vernacular becomes
    the display title (with its subtitle and responsibility), and the 245 goes to ``title_romanised``. The same
    pairing gives names their ``vernacular`` and the publication statement its vernacular place/publisher.
    Names 100/110/111/700/710/711 with their role from $4 codes or $e ($j for meetings) terms; 1XX without a
    role is the author. 264 (second indicator 1) or 260 $a $b $c, year from the first four-digit year in $c,
    else 008/07-10. 020 $a validated and normalised to ISBN-13 (ISBN-10 converted; invalid ones kept as found
    in ``invalid_isbns``), 022 ISSN, language 008/35-37 else 041 $a, subjects 600/610/611/630/648/650/651
    ($a and the heading's own subfields, then $v $x $y $z, joined with " -- "), 084 $2 clc -> ``clc`` (other
    084 schemes, 082 ddc and 050 lcc -> ``classifications``), 250 edition, 490/830 series, 300 physical,
    leader/06-07 format, leader/05 'd' deleted, 005 version, 008/00-05 date entered.

UNIMARC / CNMARC
    200 $a (several joined with " ; ") + $h $i, $e subtitle, $f/$g responsibility, $9 pinyin -> romanised
    title; 700/701 personal names (author), 702 (contributor), $a + ", " + $b, role from $4 (codes 070
    author, 340 editor, 730 translator, 440 illustrator, ... or a Chinese term such as 著/编/译); 710/711/712
    corporate; 210 (else 214) $a place $c publisher $d date, year from $d else 100 $a/9-12; 010 ISBN, 011 ISSN,
    101 $a language, 600/601/606/607 subjects ($a [+ $b] then $j $x $y $z), 690 $a CLC (and 686 with a clc
    $2; 676 ddc, 680 lcc, 692 the Chinese Academy of Sciences scheme), 205 edition, 225 series, 215 physical,
    100 $a/0-7 date entered.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable

from pymarc import Field, Record
from stdnum import isbn as _isbn
from stdnum import issn as _issn
from stdnum.exceptions import ValidationError

from library.catalog.holdings import HoldingsConfig
from library.catalog.marc import RawRecord
from library.catalog.records import BibRecord, Name

__all__ = ["MappingError", "clean", "to_bib"]


class MappingError(ValueError):
    """A record that cannot become a ``BibRecord`` (no control number)."""


# --------------------------------------------------------------------------- small helpers

_CLOSING = "/:;=,"
_ABBREVIATIONS = frozenset(
    {"ed", "eds", "etc", "inc", "ltd", "co", "corp", "jr", "sr", "st", "dr", "mr", "mrs", "ms", "vol", "vols", "no"}
    | {"pt", "v", "p", "cm", "ca", "al", "mss", "comp", "trans", "rev"}
)
_YEAR = re.compile(r"(?<!\d)(1\d{3}|20\d{2})(?!\d)")
_ISBN_TOKEN = re.compile(r"[0-9][0-9\- ]{7,}[0-9Xx]")
_UNKNOWN_PLACE_OR_PUBLISHER = {"s.l.", "s.n.", "sine loco", "sine nomine", "出版地不详", "出版者不详", "[出版地不详]"}
_MAX_YEAR = _dt.date.today().year + 5
_THIS_YY = _dt.date.today().year % 100
_ENDS_WITH_PUNCTUATION = frozenset("/:;=,.")


def clean(value: str | None) -> str:
    """Strip whitespace and ISBD closing punctuation (" /", " :", " ;", " =", ",", and a final "." unless it
    ends an initial, an abbreviation or an ellipsis)."""
    if not value:
        return ""
    s = value.strip()
    if not s or s[-1] not in _ENDS_WITH_PUNCTUATION:
        return s
    while s and s[-1] in _CLOSING:
        s = s[:-1].rstrip()
    if s.endswith("."):
        word = s[:-1].rsplit(" ", 1)[-1].lstrip("([")
        keep = word.endswith(".") or "." in word or (len(word) == 1 and word.isalpha())
        if not keep and word.lower() not in _ABBREVIATIONS:
            s = s[:-1].rstrip()
            while s and s[-1] in _CLOSING:
                s = s[:-1].rstrip()
    return s


def _clean_entity(value: str | None) -> str | None:
    """Place or publisher: cleaned, brackets dropped, "[S.l.]"/"[s.n.]" (unknown) -> None."""
    s = clean(value)
    if s.startswith("[") and s.endswith("]"):
        s = clean(s[1:-1])
    elif s.startswith("[") and "]" not in s:
        s = clean(s[1:])
    if not s or s.lower() in _UNKNOWN_PLACE_OR_PUBLISHER:
        return None
    return s


def _first(field: Field, code: str) -> str | None:
    for c, v in field.subfields:
        if c == code:
            return v
    return None


def _all(field: Field, codes: str) -> list[str]:
    return [v for c, v in field.subfields if c in codes]


def _by_tag(record: Record) -> dict[str, list[Field]]:
    out: dict[str, list[Field]] = {}
    for f in record.fields:
        lst = out.get(f.tag)
        if lst is None:
            out[f.tag] = [f]
        else:
            lst.append(f)
    return out


def _control(tags: dict[str, list[Field]], tag: str) -> str | None:
    for f in tags.get(tag, ()):
        if f.control_field and f.data and f.data.strip():
            return f.data.strip()
    return None


def _year(text: str | None) -> int | None:
    if not text:
        return None
    for m in _YEAR.finditer(text):
        y = int(m.group(1))
        if y <= _MAX_YEAR:
            return y
    return None


def _dedupe(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def _isbns(values: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    good: list[str] = []
    bad: list[str] = []
    for value in values:
        m = _ISBN_TOKEN.search(value)
        if not m:
            if value.strip() and any(ch.isdigit() for ch in value):
                bad.append(value.strip())
            continue
        token = m.group(0).strip()
        compact = token.replace("-", "").replace(" ", "")
        try:
            if len(compact) == 13 and compact.isdigit() and compact[:3] in ("978", "979"):
                # the common case, with the checks stdnum.isbn.validate makes for it (EAN-13 check digit and
                # the 978/979 prefix) done inline: stdnum's generic clean-up costs more than the rest of the
                # mapping of an ISBN (tests/unit/test_marc_mapping.py keeps this equal to stdnum)
                total = sum(map(int, compact[0:12:2])) + 3 * sum(map(int, compact[1:12:2]))
                if (10 - total % 10) % 10 != int(compact[12]):
                    raise ValidationError("invalid check digit")
                number = compact
            else:
                number = _isbn.to_isbn13(_isbn.validate(compact))
        except ValidationError:
            bad.append(token)
            continue
        if number not in good:
            good.append(number)
    return tuple(good), tuple(dict.fromkeys(bad))


def _issns(values: Iterable[str]) -> tuple[str, ...]:
    out = []
    for value in values:
        token = value.strip().split(" ")[0] if value else ""
        try:
            number = _issn.format(_issn.validate(token))
        except ValidationError:
            continue
        if number not in out:
            out.append(number)
    return tuple(out)


def _language(code: str | None) -> str | None:
    if not code:
        return None
    code = code.strip().lower()[:3]
    if len(code) == 3 and code.isascii() and code.isalpha() and code not in ("und", "zxx"):
        return code
    return None


def _date(yyyymmdd: str) -> str | None:
    if len(yyyymmdd) == 8 and yyyymmdd.isdigit():
        try:
            return _dt.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:])).isoformat()
        except ValueError:
            return None
    return None


def _latin(text: str) -> bool:
    """True when every letter in ``text`` is Latin script (basic, Latin-1, extended A/B/additional)."""
    for ch in text:
        if ch.isalpha():
            o = ord(ch)
            if not (o < 0x250 or 0x1E00 <= o < 0x1F00):
                return False
    return True


_ROLES = {
    # MARC relator codes
    "aut": "author",
    "cre": "author",
    "edt": "editor",
    "pbd": "editor",
    "red": "editor",
    "trl": "translator",
    "ill": "illustrator",
    "com": "compiler",
    "ctb": "contributor",
    "aui": "contributor",
    "aft": "contributor",
    "ann": "annotator",
    "cwt": "commentator",
    "pht": "photographer",
    "cmp": "composer",
    "nrt": "narrator",
    "prf": "performer",
    "drt": "director",
    "pbl": "publisher",
    "spn": "sponsor",
    "isb": "publisher",
    # UNIMARC relator codes
    "070": "author",
    "072": "author",
    "340": "editor",
    "651": "editor",
    "710": "editor",
    "730": "translator",
    "440": "illustrator",
    "220": "compiler",
    "205": "contributor",
    "080": "contributor",
    "075": "contributor",
    "020": "annotator",
    "212": "commentator",
    "230": "composer",
    "600": "photographer",
    "650": "publisher",
    "723": "sponsor",
    # terms ($e / $j, CNMARC $4 in words)
    "author": "author",
    "writer": "author",
    "editor": "editor",
    "ed": "editor",
    "eds": "editor",
    "translator": "translator",
    "tr": "translator",
    "trans": "translator",
    "illustrator": "illustrator",
    "compiler": "compiler",
    "comp": "compiler",
    "contributor": "contributor",
    "photographer": "photographer",
    "composer": "composer",
    "annotator": "annotator",
    "著": "author",
    "撰": "author",
    "作": "author",
    "原著": "author",
    "编著": "author",
    "著述": "author",
    "文": "author",
    "编": "editor",
    "主编": "editor",
    "编辑": "editor",
    "选编": "editor",
    "编选": "editor",
    "编注": "editor",
    "编纂": "editor",
    "編": "editor",
    "主編": "editor",
    "译": "translator",
    "翻译": "translator",
    "编译": "translator",
    "譯": "translator",
    "翻譯": "translator",
    "绘": "illustrator",
    "绘图": "illustrator",
    "插图": "illustrator",
    "繪": "illustrator",
    "图": "illustrator",
    "注": "annotator",
    "校注": "annotator",
    "评注": "annotator",
    "摄影": "photographer",
}


def _role(values: Iterable[str]) -> str | None:
    for v in values:
        key = v.strip().strip(".,;: ").lower()
        role = _ROLES.get(key)
        if role:
            return role
    return None


def _name_text(field: Field, personal: bool, unimarc: bool = False) -> str:
    if unimarc:
        a, b = clean(_first(field, "a")), clean(_first(field, "b"))
        if personal:
            return f"{a}, {b}" if a and b else a or b
        return ". ".join(p for p in [a, *(clean(v) for v in _all(field, "b"))] if p)
    if personal:
        return clean(" ".join(v.strip() for v in _all(field, "ab")))
    codes = "ab" if field.tag[1:] == "10" else "ae"
    return ". ".join(p for p in (clean(v) for v in _all(field, codes)) if p)


def _format(leader: str, unimarc: bool) -> str:
    kind, level = leader[6], leader[7]
    if kind in "at" and level in "bis":
        return "serial"
    if unimarc:
        table = {"a": "book", "b": "manuscript", "c": "score", "d": "score", "e": "map", "f": "map",
                 "g": "video", "i": "audio", "j": "music", "k": "image", "l": "electronic", "m": "kit",
                 "r": "object"}  # fmt: skip
    else:
        table = {"a": "book", "t": "manuscript", "c": "score", "d": "score", "e": "map", "f": "map",
                 "g": "video", "i": "audio", "j": "music", "k": "image", "m": "electronic", "o": "kit",
                 "p": "mixed", "r": "object"}  # fmt: skip
    return table.get(kind, "book")


def _subject(field: Field, heading_codes: str, subdivision_codes: str) -> str:
    heading: list[str] = []
    subdivisions: list[str] = []
    for code, value in field.subfields:
        if code in subdivision_codes:
            v = clean(value)
            if v:
                subdivisions.append(v)
        elif code in heading_codes and not subdivisions:
            heading.append(value.strip())
    main = clean(" ".join(heading))
    return " -- ".join([main, *subdivisions]) if main else " -- ".join(subdivisions)


# --------------------------------------------------------------------------- MARC21


_SUBJECT_HEADING = {
    "600": "abcdqt",
    "610": "abcdt",
    "611": "acdent",
    "630": "adfnpt",
    "648": "a",
    "650": "abcd",
    "651": "a",
}


def _marc21(rec: Record, holdings: HoldingsConfig | None, library: str) -> BibRecord:
    tags = _by_tag(rec)
    control_number = _control(tags, "001")
    if not control_number:
        raise MappingError("record has no 001 control number")
    f008 = _control(tags, "008") or ""

    linked: dict[tuple[str, str], Field] = {}
    for f in tags.get("880", ()):
        six = _first(f, "6")
        if six and len(six) >= 6 and six[4:6] != "00":
            linked[(six[:3], six[4:6])] = f

    def vernacular(field: Field) -> Field | None:
        if not linked:
            return None
        six = _first(field, "6")
        if six and six.startswith("880-") and len(six) >= 6:
            return linked.get((field.tag, six[4:6]))
        return None

    # title
    f245 = tags.get("245", [None])[0]
    if f245 is None:  # an orphan vernacular title is better than none
        f245 = next((f for (tag, _), f in linked.items() if tag == "245"), None)
    title = subtitle = responsibility = title_vernacular = title_romanised = None
    if f245 is not None:
        title, subtitle, responsibility = _title_245(f245)
        v245 = vernacular(f245)
        if v245 is not None:
            v_title, v_subtitle, v_resp = _title_245(v245)
            title_vernacular = v_title or None
            if v_title and _latin(title or "") and not _latin(v_title):
                title_romanised = title
                title, subtitle, responsibility = v_title, v_subtitle or subtitle, v_resp or responsibility
            elif v_title and _latin(v_title) and not _latin(title or ""):
                title_romanised = v_title

    # names
    names: list[Name] = []
    for tag in ("100", "110", "111", "700", "710", "711"):
        for f in tags.get(tag, ()):
            name, role, personal = _marc21_name(f, tag)
            if not name:
                continue
            v = vernacular(f)
            v_name = _marc21_name(v, tag)[0] if v is not None else None
            names.append(Name(name=name, role=role, corporate=not personal, vernacular=v_name or None))

    # publication
    pub = next((f for f in tags.get("264", ()) if f.indicator2 == "1"), None)
    if pub is None:
        pub = (tags.get("260") or tags.get("264") or [None])[0]
    place = publisher = None
    year = None
    if pub is not None:
        place, publisher = _clean_entity(_first(pub, "a")), _clean_entity(_first(pub, "b"))
        year = _year(_first(pub, "c"))
        v = vernacular(pub)
        if v is not None:
            v_place, v_publisher = _clean_entity(_first(v, "a")), _clean_entity(_first(v, "b"))
            if v_place and not _latin(v_place):
                place = v_place
            if v_publisher and not _latin(v_publisher):
                publisher = v_publisher
    if year is None and len(f008) >= 11 and f008[7:11].isdigit():
        year = _year(f008[7:11])

    isbns, invalid = _isbns(v for f in tags.get("020", ()) for v in _all(f, "a"))
    issns = _issns(v for f in tags.get("022", ()) for v in _all(f, "a"))

    language = _language(f008[35:38]) if len(f008) >= 38 else None
    if language is None:
        language = next((_language(_first(f, "a")) for f in tags.get("041", ()) if _first(f, "a")), None)

    subjects = _dedupe(
        _subject(f, _SUBJECT_HEADING[tag], "vxyz") for tag in _SUBJECT_HEADING for f in tags.get(tag, ())
    )

    clc: list[str] = []
    classifications: list[tuple[str, str]] = []
    for f in tags.get("084", ()):
        scheme = (_first(f, "2") or "").strip().lower()
        for a in _all(f, "a"):
            a = a.strip()
            if not a:
                continue
            if scheme.startswith("clc") or scheme in ("cclc", "中图法", "ztf"):
                clc.append(a)
            else:
                classifications.append((scheme or "084", a))
    for f in tags.get("082", ()):
        a = _first(f, "a")
        if a:
            classifications.append(("ddc", a.replace("/", "").replace("'", "").strip()))
    for f in tags.get("050", ()):
        a = _first(f, "a")
        if a:
            classifications.append(("lcc", " ".join(p.strip() for p in (a, _first(f, "b") or "") if p.strip())))

    edition = None
    for f in tags.get("250", ()):
        edition = clean(" ".join(v.strip() for v in _all(f, "ab"))) or None
        break

    series = _dedupe(
        [clean(_first(f, "a")) for f in (*tags.get("490", ()), *tags.get("440", ()))]
        + [clean(" ".join(_all(f, "anp"))) for f in tags.get("830", ())]
    )

    physical = None
    for f in tags.get("300", ()):
        physical = " ".join(v.strip() for v in _all(f, "abcefg")).strip().rstrip(" ;:/,") or None
        break

    leader = str(rec.leader)
    return BibRecord(
        control_number=control_number,
        dialect="marc21",
        title=title or "",
        subtitle=subtitle or None,
        responsibility=responsibility or None,
        title_vernacular=title_vernacular,
        names=tuple(dict.fromkeys(names)),
        publisher=publisher,
        place=place,
        year=year,
        edition=edition,
        isbns=isbns,
        invalid_isbns=invalid,
        issns=issns,
        language=language,
        subjects=subjects,
        clc=_dedupe(clc),
        classifications=tuple(dict.fromkeys(classifications)),
        series=series,
        physical=physical,
        format=_format(leader, unimarc=False),
        items=holdings.items_in(tags.get(holdings.tag, ()), library) if holdings else (),
        deleted=leader[5] == "d",
        version=_control(tags, "005"),
        title_romanised=title_romanised or None,
        date_entered=_marc21_date_entered(f008),
    )


def _marc21_name(f: Field, tag: str) -> tuple[str, str, bool]:
    """(heading, role, personal) of a 100/110/111/700/710/711 (or its 880) in one pass over the subfields."""
    kind = tag[1:]
    personal = kind == "00"
    heading_codes, term_code = ("ab", "e") if kind != "11" else ("ae", "j")
    parts: list[str] = []
    role = term_role = None
    for code, value in f.subfields:
        if code in heading_codes:
            parts.append(value.strip())
        elif code == "4":
            role = role or _ROLES.get(value.strip().strip(".,;: ").lower())
        elif code == term_code:
            term_role = term_role or _ROLES.get(value.strip().strip(".,;: ").lower())
    name = clean(" ".join(parts)) if personal else ". ".join(p for p in map(clean, parts) if p)
    role = role or term_role or ("author" if tag[0] == "1" else "contributor" if personal else "corporate")
    return name, role, personal


def _title_245(f: Field) -> tuple[str, str | None, str | None]:
    a = _first(f, "a") or _first(f, "k") or ""
    title = clean(a)
    for part in _all(f, "np"):
        part = clean(part)
        if part:
            title = f"{title}. {part}" if title else part
    subtitle = clean(_first(f, "b")) or None
    responsibility = clean(_first(f, "c")) or None
    return title, subtitle, responsibility


def _marc21_date_entered(f008: str) -> str | None:
    yymmdd = f008[:6]
    if len(yymmdd) != 6 or not yymmdd.isdigit():
        return None
    yy = int(yymmdd[:2])
    century = 1900 if yy > _THIS_YY + 1 else 2000
    return _date(f"{century + yy}{yymmdd[2:]}")


# --------------------------------------------------------------------------- UNIMARC / CNMARC


_UNIMARC_SUBJECTS = {"600": "abcdf", "601": "abcdefgh", "606": "a", "607": "a"}


def _unimarc(rec: Record, holdings: HoldingsConfig | None, library: str) -> BibRecord:
    tags = _by_tag(rec)
    control_number = _control(tags, "001")
    if not control_number:
        raise MappingError("record has no 001 control number")

    f100a = ""
    for f in tags.get("100", ()):
        f100a = _first(f, "a") or ""
        break

    title = ""
    subtitle = responsibility = title_romanised = None
    for f in tags.get("200", ()):
        title = " ; ".join(t for t in (clean(a) for a in _all(f, "a")) if t)
        for part in _all(f, "hi"):
            part = clean(part)
            if part:
                title = f"{title}. {part}" if title else part
        subtitle = " : ".join(t for t in (clean(e) for e in _all(f, "e")) if t) or None
        responsibility = " ; ".join(t for t in (clean(v) for v in _all(f, "fg")) if t) or None
        title_romanised = clean(_first(f, "9") or _first(f, "A")) or None
        break

    names: list[Name] = []
    defaults = {
        "700": "author",
        "701": "author",
        "702": "contributor",
        "710": "author",
        "711": "author",
        "712": "corporate",
    }
    for tag, default in defaults.items():
        for f in tags.get(tag, ()):
            personal = tag[1] == "0"
            name = _name_text(f, personal, unimarc=True)
            if name:
                role = _role(_all(f, "4")) or default
                names.append(Name(name=name, role=role, corporate=not personal))

    pub = (tags.get("210") or tags.get("214") or [None])[0]
    place = publisher = None
    year = None
    if pub is not None:
        place, publisher = _clean_entity(_first(pub, "a")), _clean_entity(_first(pub, "c"))
        year = _year(_first(pub, "d"))
    if year is None and f100a[9:13].isdigit():
        year = _year(f100a[9:13])

    isbns, invalid = _isbns(v for f in tags.get("010", ()) for v in _all(f, "a"))
    issns = _issns(v for f in tags.get("011", ()) for v in _all(f, "a"))
    language = next((_language(_first(f, "a")) for f in tags.get("101", ()) if _first(f, "a")), None)

    subjects = _dedupe(
        _subject(f, _UNIMARC_SUBJECTS[tag], "jxyz") for tag in _UNIMARC_SUBJECTS for f in tags.get(tag, ())
    )

    clc: list[str] = [a.strip() for f in tags.get("690", ()) for a in _all(f, "a") if a.strip()]
    classifications: list[tuple[str, str]] = []
    for f in tags.get("686", ()):
        scheme = (_first(f, "2") or "").strip().lower()
        for a in _all(f, "a"):
            if a.strip():
                if scheme.startswith("clc") or scheme in ("中图法", "ztf"):
                    clc.append(a.strip())
                else:
                    classifications.append((scheme or "686", a.strip()))
    for tag, scheme in (("676", "ddc"), ("680", "lcc"), ("692", "cas")):
        for f in tags.get(tag, ()):
            number = " ".join(v.strip() for v in _all(f, "ab") if v.strip())
            if number:
                classifications.append((scheme, number))

    edition = None
    for f in tags.get("205", ()):
        edition = clean(" ".join(v.strip() for v in _all(f, "ab"))) or None
        break
    series = _dedupe(clean(_first(f, "a")) for f in tags.get("225", ()))

    physical = None
    for f in tags.get("215", ()):
        text = clean(_first(f, "a"))
        for code, sep in (("c", " : "), ("d", " ; "), ("e", " + ")):
            v = clean(_first(f, code))
            if v:
                text = f"{text}{sep}{v}" if text else v
        physical = text or None
        break

    leader = str(rec.leader)
    return BibRecord(
        control_number=control_number,
        dialect="unimarc",
        title=title,
        subtitle=subtitle,
        responsibility=responsibility,
        names=tuple(dict.fromkeys(names)),
        publisher=publisher,
        place=place,
        year=year,
        edition=edition,
        isbns=isbns,
        invalid_isbns=invalid,
        issns=issns,
        language=language,
        subjects=subjects,
        clc=_dedupe(clc),
        classifications=tuple(dict.fromkeys(classifications)),
        series=series,
        physical=physical,
        format=_format(leader, unimarc=True),
        items=holdings.items_in(tags.get(holdings.tag, ()), library) if holdings else (),
        deleted=leader[5] == "d",
        version=_control(tags, "005"),
        title_romanised=title_romanised,
        date_entered=_date(f100a[:8]),
    )


# --------------------------------------------------------------------------- entry point


def to_bib(raw: RawRecord, *, holdings: HoldingsConfig | None = None, library: str) -> BibRecord:
    """Map a record read by ``library.catalog.marc.read`` to our model; ``library`` owns the items.

    Raises ``MappingError`` for a record without a control number (001).
    """
    if raw.dialect == "unimarc":
        return _unimarc(raw.record, holdings, library)
    return _marc21(raw.record, holdings, library)
