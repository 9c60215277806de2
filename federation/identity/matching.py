"""Probabilistic person matching for records that arrive without a valid national ID number.

Fellegi–Sunter style: each field compared on both sides adds an agreement weight (roughly log2 m/u, rounded
and tempered) or subtracts a disagreement weight; the sum is mapped onto 0..1 between the worst and best sums
attainable for the fields actually present, so a missing field neither helps nor hurts. Two caps sit on
top: a differing sex keeps the score below review, and a single identifying field is never enough to link.
Pure functions, no database: the service fetches candidates by :func:`blocking_keys`, then :func:`best_match`.
"""

from __future__ import annotations

import datetime
import enum
import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import opencc
from pypinyin import Style, lazy_pinyin

__all__ = [
    "DEFAULT_THRESHOLDS",
    "WEIGHTS",
    "Band",
    "Demographics",
    "MatchScore",
    "Thresholds",
    "Weights",
    "best_match",
    "blocking_keys",
    "jaro_winkler",
    "name_keys",
    "normalise_name",
    "normalise_phone",
    "normalise_sex",
    "score",
]

K = TypeVar("K")


@dataclass(frozen=True)
class Demographics:
    name: str  # Chinese or Latin, any form ("张三", "張三", "Zhang San", "ZHANG, San")
    birth_date: datetime.date | None = None
    sex: str | None = None  # "male" | "female" | None
    phone: str | None = None  # any formatting, may have +86 / 0086 prefix


class Band(enum.StrEnum):
    LINK = "link"  # same person: link automatically
    REVIEW = "review"  # plausible: a person decides
    NEW = "new"  # a different person


@dataclass(frozen=True)
class Thresholds:
    """Policy as data: a score at or above ``link`` links, at or above ``review`` goes to review."""

    link: float = 0.90
    review: float = 0.60

    def __post_init__(self) -> None:
        if not 0.0 <= self.review <= self.link <= 1.0:
            raise ValueError(f"need 0 <= review <= link <= 1, got review={self.review} link={self.link}")

    def band(self, value: float) -> Band:
        if value >= self.link:
            return Band.LINK
        if value >= self.review:
            return Band.REVIEW
        return Band.NEW


@dataclass(frozen=True)
class Weights:
    """Agreement (+) and disagreement (-) weights per field, in rough bits of evidence.

    Only the ratios matter (the score is normalised), so they are rounded to readable numbers.
    """

    # Name. A full Han name is fairly selective (even 张伟, the commonest, is ~0.02% of people), so exact
    # characters are worth about as much as a birth date. Pinyin loses the characters: 张/章/彰 all become
    # "zhang", so a romanised match is weaker, and it is the best a Latin-written name can ever reach. Two Han
    # names with different characters but the same sound (张三/章三) are a typical IME slip but also genuinely
    # different names, hence only half of that. Names are often re-keyed, so disagreement is not a hard no.
    name_exact: float = 10.0
    name_romanised: float = 8.0
    name_homophone: float = 4.0
    name_similar: float = 3.0  # Jaro-Winkler on the pinyin keys >= name_similarity_min
    name_differs: float = -6.0
    name_similarity_min: float = 0.90
    # Birth date: ~1 in 30,000 by chance (365 days x ~80 years) — strong; clerks swap day/month or
    # mistype a digit, so those earn partial credit; a plainly different date is strong evidence against.
    birth_date_equal: float = 10.0
    birth_date_near: float = 5.0
    birth_date_differs: float = -8.0
    # Sex: agreeing happens half the time by chance (weak); disagreeing is rare for the same person,
    # and a veto caps the score below review on top of this weight.
    sex_equal: float = 1.0
    sex_differs: float = -4.0
    # Phone: an equal mobile number is close to unique; people change numbers and share a parent's,
    # so a different number is only mild evidence against.
    phone_equal: float = 9.0
    phone_differs: float = -2.0

    def __post_init__(self) -> None:
        # The normalisation assumes each field's weights are ordered worst..best; refuse anything else.
        name_ok = (
            self.name_differs < min(self.name_similar, self.name_homophone)
            and self.name_similar <= self.name_romanised <= self.name_exact
            and self.name_homophone <= self.name_exact
        )
        others_ok = (
            self.birth_date_differs <= self.birth_date_near <= self.birth_date_equal
            and self.birth_date_differs < self.birth_date_equal
            and self.sex_differs < self.sex_equal
            and self.phone_differs < self.phone_equal
        )
        if not (name_ok and others_ok and 0.0 < self.name_similarity_min <= 1.0):
            raise ValueError("weights must be ordered: differs < partial <= equal for every field")


WEIGHTS = Weights()
DEFAULT_THRESHOLDS = Thresholds()

# How far below a threshold a capped score lands, so the band is unambiguous after rounding.
_CAP_MARGIN = 0.01


@dataclass(frozen=True)
class MatchScore:
    score: float  # 0..1
    band: Band
    reasons: tuple[str, ...]  # e.g. ("name: pinyin equal", "birth_date: equal", "phone: differs")


# ---------------------------------------------------------------------------------------------- names

# CJK unified ideographs (with extension A, B..H) and the compatibility block (NFKC maps most of it away).
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")

# lazy_pinyin reads a character as it reads in ordinary words; as a family name a few read differently
# (曾 is zeng not ceng, 单 is shan not dan). Applied to the first character of an all-Han name only,
# because Chinese names are always written family name first. Ambiguous ones (覃, 乐, 盖) are left alone.
_SURNAME_READINGS = {
    "曾": "zeng",
    "单": "shan",
    "仇": "qiu",
    "区": "ou",
    "解": "xie",
    "朴": "piao",
    "查": "zha",
    "翟": "zhai",
    "缪": "miao",
    "秘": "bi",
    "召": "shao",
}


@functools.cache
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


class _Name(NamedTuple):
    han: str | None  # simplified Han characters, when the name is written in Han only
    han_raw: str | None  # the same before traditional->simplified, to say so in the reasons
    canonical: str  # key in the order given
    keys: frozenset[str]  # every key this name may be filed under


def _latin_tokens(text: str) -> list[str]:
    # Hyphens and apostrophes join syllables ("Xiao-Ming", "Xi'an"); anything else that is not a letter
    # separates words. NFKD splits off accents as combining marks, which are not letters and so vanish
    # ("Zhāng" -> "zhang"); ü is pinyin's v (pypinyin writes 吕 as "lv"), so map it before that.
    text = text.replace("ü", "v").replace("Ü", "V")
    text = unicodedata.normalize("NFKD", text).casefold()
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    words = re.split(r"[^\w'\-]+|_", text)
    tokens = ["".join(ch for ch in w if ch.isalpha()) for w in words]
    return [t for t in tokens if t]


@functools.lru_cache(maxsize=4096)
def _analyse(name: str) -> _Name:
    text = unicodedata.normalize("NFKC", name or "")
    letters = "".join(ch for ch in text if ch.isalpha())
    if letters and all(_HAN.match(ch) for ch in letters):
        # All Han: spaces and middle dots (欧阳 娜娜, 阿卜杜·热合曼) carry nothing; one order only.
        simplified = "".join(ch for ch in _t2s().convert(letters) if ch.isalpha())
        syllables = lazy_pinyin(simplified, style=Style.NORMAL)
        if syllables and simplified[0] in _SURNAME_READINGS:
            syllables[0] = _SURNAME_READINGS[simplified[0]]
        key = "".join(ch for ch in "".join(syllables).casefold() if ch.isalpha())
        return _Name(simplified, letters, key, frozenset({key}))

    # Latin (or mixed): turn any Han into spaced pinyin, then work on words. "FAMILY, Given" says which
    # part is the family name, so the canonical form puts it first; otherwise keep the order given.
    text = _t2s().convert(text)
    if _HAN.search(text):
        text = " ".join(lazy_pinyin(text, style=Style.NORMAL))
    family, comma, given = text.partition(",")
    tokens = _latin_tokens(family) + _latin_tokens(given) if comma else _latin_tokens(text)
    if not tokens:
        return _Name(None, None, "", frozenset())
    # Both orders, since a Latin-written Chinese name comes family-first or family-last depending on
    # who typed it: as given, last word moved to the front, first word moved to the back.
    orders = (tokens, tokens[-1:] + tokens[:-1], tokens[1:] + tokens[:1])
    return _Name(None, None, "".join(tokens), frozenset("".join(o) for o in orders))


def normalise_name(name: str) -> str:
    """The canonical key of a name in the order given: toneless pinyin or Latin letters, casefolded.

    ``"张三"``, ``"張三"``, ``"Zhang San"``, ``"ZHANG, San"`` -> ``"zhangsan"``;
    ``"San Zhang"`` -> ``"sanzhang"`` (use :func:`name_keys` to compare across orders).
    ``""`` when the name has no letters at all.
    """
    return _analyse(name).canonical


def name_keys(name: str) -> frozenset[str]:
    """Every key the name may be filed under: its pinyin for Han, both family/given orders for Latin.

    ``"张三"``, ``"張三"``, ``"Zhang San"`` and ``"San ZHANG"`` all contain ``"zhangsan"``.
    """
    return _analyse(name).keys


# ---------------------------------------------------------------------------------------------- other fields


def normalise_phone(phone: str | None) -> str | None:
    """Digits only, without the +86 / 0086 / 86 country code; ``None`` if fewer than 7 digits remain.

    ``"+86 138-0013-8000"`` -> ``"13800138000"``. A mainland landline given internationally
    (``"+86 28 8888 8888"``) gets its trunk 0 back (``"02888888888"``), as it is dialled at home.
    """
    if not phone:
        return None
    text = unicodedata.normalize("NFKC", phone).strip()  # full-width digits too
    digits = "".join(ch for ch in text if "0" <= ch <= "9")
    international = text.startswith("+")
    if digits.startswith("00"):  # international dialling prefix, same as "+"
        digits, international = digits[2:], True
    if international and digits.startswith("86"):
        digits = digits[2:]
        if digits[:1] not in ("", "0", "1"):  # landline without its trunk 0
            digits = "0" + digits
    elif not international and len(digits) == 13 and digits.startswith("861"):
        digits = digits[2:]  # "86 138..." written without the plus: a mobile never starts with 86
    return digits if len(digits) >= 7 else None


# GB/T 2261.1 codes sex as 1 (male) and 2 (female); accept those and the obvious spellings.
_SEXES = {
    "male": "male",
    "m": "male",
    "男": "male",
    "1": "male",
    "female": "female",
    "f": "female",
    "女": "female",
    "2": "female",
}


def normalise_sex(sex: str | None) -> str | None:
    """``"male"``, ``"female"`` or ``None`` (unknown, unspecified or unrecognised: not compared)."""
    return _SEXES.get(sex.strip().casefold()) if sex else None


def jaro_winkler(a: str, b: str, prefix_scale: float = 0.1) -> float:
    """Jaro-Winkler similarity in 0..1 (1 = equal).

    Jaro counts characters that match within a window of half the longer length and the transpositions
    among them; Winkler adds ``prefix_scale`` per character of common prefix (at most 4), since typing
    errors tend to come late. The greedy matching depends on argument order in rare cases, so the pair
    is put in a fixed order first and the result is symmetric.
    """
    if a > b:
        a, b = b, a
    if a == b:
        return 1.0
    if not a or not b:
        return 0.0
    window = max(0, max(len(a), len(b)) // 2 - 1)
    a_hit = [False] * len(a)
    b_hit = [False] * len(b)
    matches = 0
    for i, ch in enumerate(a):
        for j in range(max(0, i - window), min(len(b), i + window + 1)):
            if not b_hit[j] and b[j] == ch:
                a_hit[i] = b_hit[j] = True
                matches += 1
                break
    if not matches:
        return 0.0
    a_seq = [ch for ch, hit in zip(a, a_hit, strict=True) if hit]
    b_seq = [ch for ch, hit in zip(b, b_hit, strict=True) if hit]
    transpositions = sum(x != y for x, y in zip(a_seq, b_seq, strict=True)) / 2
    jaro = (matches / len(a) + matches / len(b) + (matches - transpositions) / matches) / 3
    prefix = 0
    for x, y in zip(a[:4], b[:4], strict=False):
        if x != y:
            break
        prefix += 1
    return jaro + prefix * prefix_scale * (1.0 - jaro)


# ---------------------------------------------------------------------------------------------- scoring


class _Field(NamedTuple):
    weight: float  # what this comparison contributed
    worst: float  # the lowest it could have contributed
    best: float  # the highest it could have contributed, given the forms on both sides
    reason: str


def _compare_names(a: _Name, b: _Name, w: Weights) -> _Field:
    if a.han is not None and b.han is not None:
        # Both in characters: the characters themselves are the strongest evidence available.
        if a.han == b.han:
            how = "equal" if a.han_raw == b.han_raw else "equal after traditional->simplified"
            return _Field(w.name_exact, w.name_differs, w.name_exact, f"name: {how}")
        if a.keys & b.keys:
            return _Field(
                w.name_homophone, w.name_differs, w.name_exact, "name: pinyin equal, characters differ (homophone)"
            )
        best = w.name_exact
    else:
        # At least one side in letters: pinyin agreement is the most that can be shown, so it counts in full.
        if a.keys & b.keys:
            if a.canonical == b.canonical:
                how = "pinyin equal" if (a.han or b.han) else "equal"
            else:
                how = "equal with given/family order swapped"
            return _Field(w.name_romanised, w.name_differs, w.name_romanised, f"name: {how}")
        best = w.name_romanised
    similarity = max(jaro_winkler(x, y) for x in a.keys for y in b.keys)
    if similarity >= w.name_similarity_min:
        return _Field(w.name_similar, w.name_differs, best, f"name: similar (jaro-winkler {similarity:.2f})")
    return _Field(w.name_differs, w.name_differs, best, "name: differs")


def _compare_birth_dates(a: datetime.date, b: datetime.date, w: Weights) -> _Field:
    worst, best = w.birth_date_differs, w.birth_date_equal
    if a == b:
        return _Field(w.birth_date_equal, worst, best, "birth_date: equal")
    if a.year == b.year and a.month == b.day and a.day == b.month:
        return _Field(w.birth_date_near, worst, best, "birth_date: day and month transposed")
    # strftime pads years below 1000 differently per platform: format by hand
    digits_a = f"{a.year:04d}{a.month:02d}{a.day:02d}"
    digits_b = f"{b.year:04d}{b.month:02d}{b.day:02d}"
    if sum(x != y for x, y in zip(digits_a, digits_b, strict=True)) == 1:
        return _Field(w.birth_date_near, worst, best, "birth_date: one digit differs")
    return _Field(w.birth_date_differs, worst, best, "birth_date: differs")


def _compare_sexes(a: str, b: str, w: Weights) -> _Field:
    if a == b:
        return _Field(w.sex_equal, w.sex_differs, w.sex_equal, "sex: equal")
    return _Field(w.sex_differs, w.sex_differs, w.sex_equal, "sex: differs (veto)")


def _compare_phones(a: str, b: str, w: Weights) -> _Field:
    if a == b:
        return _Field(w.phone_equal, w.phone_differs, w.phone_equal, "phone: equal")
    return _Field(w.phone_differs, w.phone_differs, w.phone_equal, "phone: differs")


def score(
    a: Demographics, b: Demographics, thresholds: Thresholds = DEFAULT_THRESHOLDS, *, weights: Weights = WEIGHTS
) -> MatchScore:
    """How likely ``a`` and ``b`` describe the same person, with the band and the reasons. Symmetric."""
    w = weights
    name_a, name_b = _analyse(a.name), _analyse(b.name)
    sex_a, sex_b = normalise_sex(a.sex), normalise_sex(b.sex)
    phone_a, phone_b = normalise_phone(a.phone), normalise_phone(b.phone)
    sex_veto = bool(sex_a and sex_b and sex_a != sex_b)

    compared: dict[str, _Field | None] = {
        "name": _compare_names(name_a, name_b, w) if name_a.keys and name_b.keys else None,
        "birth_date": (
            _compare_birth_dates(a.birth_date, b.birth_date, w)
            if a.birth_date is not None and b.birth_date is not None
            else None
        ),
        "sex": _compare_sexes(sex_a, sex_b, w) if sex_a and sex_b else None,
        "phone": _compare_phones(phone_a, phone_b, w) if phone_a and phone_b else None,
    }
    fields = [f for f in compared.values() if f is not None]
    reasons = [f.reason if f is not None else f"{key}: missing" for key, f in compared.items()]
    # Name, birth date and phone identify a person; sex only corroborates.
    identifying = sum(compared[key] is not None for key in ("name", "birth_date", "phone"))

    # Place the sum between the worst and best sums attainable for the fields present on both sides.
    total = sum(f.weight for f in fields)
    worst = sum(f.worst for f in fields)
    best = sum(f.best for f in fields)
    value = (total - worst) / (best - worst) if best > worst else 0.0
    value = min(1.0, max(0.0, value))

    if identifying < 2 and value > thresholds.link - _CAP_MARGIN:
        # One identifying field alone (a name; a birth date) is shared by thousands: never link on it.
        value = max(0.0, thresholds.link - _CAP_MARGIN)
        reasons.append("capped below link: only one identifying field to compare")
    if sex_veto:
        # A recorded sex rarely differs for the same person; such pairs are not even worth a review.
        value = min(value, max(0.0, thresholds.review - _CAP_MARGIN))

    value = round(value, 4)
    band = thresholds.band(value) if fields else Band.NEW
    return MatchScore(value, band, tuple(reasons))


def best_match(
    candidate: Demographics,
    existing: Iterable[tuple[K, Demographics]],
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    *,
    weights: Weights = WEIGHTS,
) -> tuple[K | None, MatchScore]:
    """The highest-scoring existing record (the first one on ties) and its score; check the band.

    ``(None, <NEW score>)`` when there is nothing to compare against.
    """
    best_key: K | None = None
    best: MatchScore | None = None
    for key, demographics in existing:
        result = score(candidate, demographics, thresholds, weights=weights)
        if best is None or result.score > best.score:
            best_key, best = key, result
    if best is None:
        return None, MatchScore(0.0, Band.NEW, ("no candidates",))
    return best_key, best


def blocking_keys(d: Demographics) -> frozenset[str]:
    """Cheap exact keys to fetch candidates by (any key in common makes a candidate).

    ``n:<name key>`` for each of :func:`name_keys`, ``b:<ISO birth date>``, ``p:<normalised phone>``.
    The phone key holds the number itself: hash it (blind index) before storing it anywhere.
    """
    keys = {f"n:{k}" for k in name_keys(d.name)}
    if d.birth_date is not None:
        keys.add(f"b:{d.birth_date.isoformat()}")
    phone = normalise_phone(d.phone)
    if phone:
        keys.add(f"p:{phone}")
    return frozenset(keys)
