"""PRC resident identity card numbers (公民身份号码, GB 11643-1999): validate, normalise and mask.

An 18-character number is a 6-digit address code, an 8-digit birth date (YYYYMMDD), a 3-digit sequence
(odd for men, even for women) and an ISO 7064 MOD 11-2 check character (0-9 or X). The older 15-digit
format (GB 11643-1989) has a 6-digit birth date (YYMMDD, 19th century) and no check character; it is
upgraded to 18 characters on parsing.

The address code records where the number was issued, not where the person was born, so codes are never
checked against the birth year: a person born in 1980 in what became Chongqing in 1997 may carry a 50xxxx
code, and one who kept an old Sichuan-issued 5102xx number still carries that. python-stdnum's
``cn.ric.validate`` rejects both, so only its region table is used here.

The 2023 foreign permanent resident ID card (外国人永久居留身份证) uses the same layout and check
character, with a leading 9 in place of the first address digit: 9, the 2-digit province code of the
issuing office, a 3-digit nationality code, then birth date, sequence, sex and check as above.

Exceptions never carry the full number, so they may be logged.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import unicodedata

from stdnum import numdb

__all__ = [
    "DIGIT_RUN",
    "ID_NUMBER_PATTERN",
    "IdNumber",
    "InvalidIdNumber",
    "check_digit",
    "is_valid_id_number",
    "looks_like_id_number",
    "mask_id_number",
    "mask_id_numbers_in_text",
    "parse_id_number",
    "upgrade_15_to_18",
]

# China has had a single UTC+8 offset without daylight saving since 1991, so a fixed offset is exact and
# avoids depending on a tz database: a baby registered this morning in Chengdu is not "born tomorrow" on a
# server running in UTC.
_CHINA_TZ = dt.timezone(dt.timedelta(hours=8), "CST")
_EARLIEST_BIRTH_DATE = dt.date(1880, 1, 1)

# Weight of position i (1-based from the left) is 2**(18 - i) mod 11.
_WEIGHTS = tuple(pow(2, 17 - i, 11) for i in range(17))

_MAINLAND_PROVINCES = frozenset(
    {"11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41"}
    | {"42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65"}
)
# 71 Taiwan; 81/82 Hong Kong and Macao (also on their residents' residence permits); 83 residence permits
# for Taiwan residents (2018).
_PROVINCES = _MAINLAND_PROVINCES | {"71", "81", "82", "83"}
_FOREIGN_RESIDENT_MARK = "9"

# Address codes in real use that the administrative-division table behind stdnum lacks.
_SUPPLEMENTARY_REGIONS: dict[str, tuple[str, str | None]] = {
    "830000": ("台湾省", None),
}

_DIGITS = frozenset("0123456789")
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212]+")
_SHAPE = re.compile(r"[0-9]{17}[0-9X]|[0-9]{15}")
_PERIOD = re.compile(r"^\[(\d*)-(\d*)\](.*)$")

# Full-width digits and X are included because NFKC-equal text must be masked too; the look-arounds keep
# a match from starting or ending inside a longer run of digits (order numbers, timestamps, card PANs),
# or ending just before an X that would make the run 19 characters long.
# Letters next to a number do not stop a match: "ID11010519491231002X" must still be masked in a log.
_D = "0-9\uff10-\uff19"
ID_NUMBER_PATTERN: re.Pattern[str] = re.compile(
    rf"(?<![{_D}])(?:[{_D}]{{17}}[{_D}Xx\uff38\uff58]|[{_D}]{{15}})(?![{_D}Xx\uff38\uff58])"
)
# Fifteen digits in a row: every ID_NUMBER_PATTERN match holds such a run. Searching for the run alone is two
# to three times cheaper (no look-arounds), so masking asks it first: most text has no such run.
DIGIT_RUN: re.Pattern[str] = re.compile(rf"[{_D}]{{15}}")


@dataclasses.dataclass(frozen=True)
class IdNumber:
    """A parsed, valid ID number; ``value`` is the normalised 18-character form."""

    value: str = dataclasses.field(repr=False)  # kept out of repr so logging the object leaks nothing
    birth_date: dt.date
    sex: str
    region_code: str
    province: str | None
    place: str | None
    upgraded_from_15: bool
    warnings: tuple[str, ...] = ()


class InvalidIdNumber(ValueError):
    """Why a string is not a valid ID number: a stable ``code`` and an English ``reason``."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def check_digit(first17: str) -> str:
    """The GB 11643 (ISO 7064 MOD 11-2) check character for 17 digits: "0"-"9" or "X"."""
    if len(first17) != 17 or not _DIGITS.issuperset(first17):
        raise InvalidIdNumber("id_number.format", "the check digit is computed from exactly 17 digits")
    total = sum(int(c) * w for c, w in zip(first17, _WEIGHTS, strict=True))
    value = (12 - total % 11) % 11
    return "X" if value == 10 else str(value)


def upgrade_15_to_18(number15: str) -> str:
    """Turn an old 15-digit number into its 18-character form (century 19, new check character)."""
    number = _clean(number15)
    if len(number) != 15:
        raise InvalidIdNumber("id_number.length", f"has {_chars(len(number))}; the old format has 15")
    _check_characters(number)
    first17 = number[:6] + "19" + number[6:]
    return first17 + check_digit(first17)


def parse_id_number(raw: str, *, today: dt.date | None = None) -> IdNumber:
    """Validate and normalise ``raw``; raises InvalidIdNumber saying exactly what is wrong."""
    if not isinstance(raw, str):
        raise TypeError(f"an ID number must be a str, not {type(raw).__name__}")
    number = _clean(raw)
    if len(number) not in (15, 18):
        raise InvalidIdNumber(
            "id_number.length", f"has {_chars(len(number))}; an ID number has 18 (or 15 for the old format)"
        )
    _check_characters(number)
    upgraded = len(number) == 15
    if upgraded:
        number = upgrade_15_to_18(number)
    else:
        expected = check_digit(number[:17])
        if number[17] != expected:
            raise InvalidIdNumber("id_number.checksum", f"check digit should be {expected}, got {number[17]}")
    birth_date = _birth_date(number[6:14], today or dt.datetime.now(_CHINA_TZ).date())
    province, place, warnings = _region(number[:6], upgraded)
    return IdNumber(
        value=number,
        birth_date=birth_date,
        sex="male" if int(number[16]) % 2 else "female",
        region_code=number[:6],
        province=province,
        place=place,
        upgraded_from_15=upgraded,
        warnings=warnings,
    )


def is_valid_id_number(raw: str) -> bool:
    """Whether ``raw`` parses as a valid ID number (see parse_id_number)."""
    if not isinstance(raw, str):
        return False
    try:
        parse_id_number(raw)
    except InvalidIdNumber:
        return False
    return True


def looks_like_id_number(text: str) -> bool:
    """Whether ``text`` is shaped like an ID number (15 digits, or 17 digits and a digit or X); no checks."""
    return isinstance(text, str) and _SHAPE.fullmatch(_clean(text)) is not None


def mask_id_number(value: str) -> str:
    """Show only the region (first 6) and the last 4 characters, e.g. 110105********002X.

    Strings too short for that keep at most their last 4 characters, and nothing when under 8 long,
    so the masked form never reveals most of what it hides.
    """
    text = _clean(value) if isinstance(value, str) else ""
    n = len(text)
    if n >= 15:
        return text[:6] + "*" * (n - 10) + text[-4:]
    if n >= 8:
        return "*" * (n - 4) + text[-4:]
    return "*" * n


def mask_id_numbers_in_text(text: str) -> str:
    """Mask every ID number in free text: 18-character runs with a correct check character and valid
    15-digit numbers. Other digit runs, and numbers inside longer digit runs, are left as they are."""
    return ID_NUMBER_PATTERN.sub(_mask_match, text) if DIGIT_RUN.search(text) else text


def _mask_match(match: re.Match[str]) -> str:
    candidate = match.group(0)
    number = _clean(candidate)
    # Any checksum-passing 18-character run is masked even if its date or region is odd: a log filter
    # should err towards hiding. 15-digit runs have no check digit, so only fully valid ones count.
    found = check_digit(number[:17]) == number[17] if len(number) == 18 else is_valid_id_number(number)
    return mask_id_number(number) if found else candidate


def _clean(raw: str) -> str:
    # Only x is upper-cased: str.upper() can change a string's length ("ß" -> "SS"), which would make
    # the reported character positions wrong.
    return _SEPARATORS.sub("", unicodedata.normalize("NFKC", raw)).replace("x", "X")


def _chars(n: int) -> str:
    return f"{n} character" if n == 1 else f"{n} characters"


def _check_characters(number: str) -> None:
    last = len(number) - 1
    for i, ch in enumerate(number):
        if ch in _DIGITS or (ch == "X" and i == last == 17):
            continue
        if len(number) == 15:
            allowed = "the old 15-character format has only digits"
        else:
            allowed = "only digits and a final X are allowed"
        raise InvalidIdNumber("id_number.format", f"character {i + 1} is {ch!r}; {allowed}")


def _birth_date(digits: str, today: dt.date) -> dt.date:
    shown = f"{digits[:4]}-{digits[4:6]}-{digits[6:]}"
    try:
        born = dt.date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        raise InvalidIdNumber("id_number.birth_date", f"birth date {shown} is not a real date") from None
    if born > today:
        raise InvalidIdNumber(
            "id_number.birth_date", f"birth date {shown} is in the future (today is {today.isoformat()})"
        )
    if born < _EARLIEST_BIRTH_DATE:
        raise InvalidIdNumber(
            "id_number.birth_date", f"birth date {shown} is before {_EARLIEST_BIRTH_DATE.isoformat()}"
        )
    return born


def _region(code: str, upgraded: bool) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(province, place, warnings) for a 6-digit address code; raises if the province is not real."""
    if code[0] == _FOREIGN_RESIDENT_MARK:
        if upgraded:
            raise InvalidIdNumber(
                "id_number.region",
                "an old 15-digit number cannot start with 9; only 18-character foreign resident numbers do",
            )
        issuing = code[1:3]
        if issuing not in _MAINLAND_PROVINCES:
            raise InvalidIdNumber(
                "id_number.region",
                f"a foreign permanent resident number must continue with a province code after the 9, got {issuing}",
            )
        province, _, _ = _lookup_region(issuing + "0000")
        note = f"foreign permanent resident number (2023 format); digits 4-6 ({code[3:]}) are a nationality code"
        return province, None, (note,)
    if code[:2] not in _PROVINCES:
        raise InvalidIdNumber(
            "id_number.region",
            f"region code {code} starts with {code[:2]}, which is not a province-level code",
        )
    province, place, known = _lookup_region(code)
    if not known:
        return province, None, (f"region code {code} not in the reference table",)
    return province, place, ()


@functools.lru_cache(maxsize=4096)
def _lookup_region(code: str) -> tuple[str | None, str | None, bool]:
    """(province, place, known) from stdnum's table of address codes, past and present."""
    if code in _SUPPLEMENTARY_REGIONS:
        province, place = _SUPPLEMENTARY_REGIONS[code]
        return province, place, True
    province: str | None = None
    place: str | None = None
    known = False
    for _part, props in numdb.get("cn/loc").info(code):
        if "province" in props:
            province = props["province"]
        if "county" in props:
            place = _latest_name(props["county"])
            known = True
    return province, place, known


def _latest_name(entry: str) -> str:
    """The name of the latest period in an entry like ``[1997-1997]万县区,[1998-]万州区``."""
    periods: list[tuple[tuple[int, int], str]] = []
    for item in entry.split(","):
        m = _PERIOD.match(item)
        if m is None:
            return item  # an undated name has held for the whole table
        start, end, name = m.groups()
        periods.append(((int(end) if end else 9999, int(start) if start else 0), name))
    return max(periods, key=lambda p: p[0])[1]
