"""The probabilistic person matcher: normalisation, scoring bands, and properties of the score."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from federation.identity.matching import (
    Band,
    Demographics,
    MatchScore,
    Thresholds,
    Weights,
    best_match,
    blocking_keys,
    jaro_winkler,
    name_keys,
    normalise_name,
    normalise_phone,
    normalise_sex,
    score,
)

BORN = dt.date(1990, 3, 14)


# ------------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("张三", "zhangsan"),
        ("張三", "zhangsan"),  # traditional -> simplified first
        ("Zhang San", "zhangsan"),
        ("ZHANG, San", "zhangsan"),  # "FAMILY, Given": family name first
        ("zhang san", "zhangsan"),
        ("San Zhang", "sanzhang"),  # the order given; name_keys covers the other
        ("Zhāng Sān", "zhangsan"),  # tone marks dropped
        ("Ｚｈａｎｇ　Ｓａｎ", "zhangsan"),  # full-width, NFKC
        ("欧阳 娜娜", "ouyangnana"),
        ("阿卜杜·热合曼", "abodureheman"),  # middle dot stripped
        ("吕布", "lvbu"),
        ("Lü Bu", "lvbu"),  # ü is pinyin's v
        ("曾凡", "zengfan"),  # surname reading, not lazy_pinyin's "ceng"
        ("Xiao-Ming Wang", "xiaomingwang"),
        ("", ""),
        ("·!?", ""),
    ],
)
def test_normalise_name(raw: str, expected: str) -> None:
    assert normalise_name(raw) == expected


def test_name_keys_share_a_key_across_scripts_and_orders() -> None:
    forms = ["张三", "張三", "Zhang San", "San ZHANG", "ZHANG, San", "zhang san"]
    shared = frozenset.intersection(*(name_keys(f) for f in forms))
    assert shared == {"zhangsan"}


def test_han_names_have_one_key_latin_names_both_orders() -> None:
    assert name_keys("张三") == {"zhangsan"}
    assert name_keys("San Zhang") == {"sanzhang", "zhangsan"}
    assert name_keys("") == frozenset()


# ------------------------------------------------------------------------------------------- phone, sex


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+86 138-0013-8000", "13800138000"),
        ("13800138000", "13800138000"),
        ("0086 138 0013 8000", "13800138000"),
        ("8613800138000", "13800138000"),
        ("(138) 0013 8000", "13800138000"),
        ("１３８００１３８０００", "13800138000"),
        ("028-8888-8888", "02888888888"),
        ("+86 28 8888 8888", "02888888888"),  # landline given internationally gets its trunk 0 back
        ("+852 2345 6789", "85223456789"),  # other countries keep their code
        ("123456", None),
        ("", None),
        (None, None),
    ],
)
def test_normalise_phone(raw: str | None, expected: str | None) -> None:
    assert normalise_phone(raw) == expected


def test_phone_formatting_does_not_matter_for_the_score() -> None:
    a = Demographics("张三", BORN, phone="+86 138-0013-8000")
    b = Demographics("张三", BORN, phone="13800138000")
    assert "phone: equal" in score(a, b).reasons


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("male", "male"),
        ("Female", "female"),
        ("M", "male"),
        ("女", "female"),
        ("1", "male"),
        ("unknown", None),
        ("", None),
        (None, None),
    ],
)
def test_normalise_sex(raw: str | None, expected: str | None) -> None:
    assert normalise_sex(raw) == expected


# ------------------------------------------------------------------------------------------- jaro-winkler


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("MARTHA", "MARHTA", 0.9611),  # the textbook examples
        ("DWAYNE", "DUANE", 0.8400),
        ("DIXON", "DICKSONX", 0.8133),
        ("abc", "abc", 1.0),
        ("abc", "xyz", 0.0),
        ("", "abc", 0.0),
    ],
)
def test_jaro_winkler(a: str, b: str, expected: float) -> None:
    assert jaro_winkler(a, b) == pytest.approx(expected, abs=1e-4)
    assert jaro_winkler(b, a) == jaro_winkler(a, b)


# ------------------------------------------------------------------------------------------- bands


def test_same_han_name_birth_date_and_sex_links() -> None:
    result = score(Demographics("张三", BORN, "male"), Demographics("张三", BORN, "male"))
    assert result.band is Band.LINK
    assert result.reasons[:3] == ("name: equal", "birth_date: equal", "sex: equal")


def test_traditional_and_simplified_link() -> None:
    result = score(Demographics("張三", BORN), Demographics("张三", BORN))
    assert result.band is Band.LINK


def test_latin_and_han_link_with_birth_date_and_phone() -> None:
    result = score(
        Demographics("Zhang San", BORN, phone="13800138000"), Demographics("张三", BORN, phone="+86 138-0013-8000")
    )
    assert result.band is Band.LINK
    assert "name: pinyin equal" in result.reasons


def test_family_name_last_in_latin_still_matches_han() -> None:
    result = score(Demographics("San ZHANG", BORN), Demographics("张三", BORN))
    assert result.band is Band.LINK


def test_homophone_goes_to_review() -> None:
    # 章三 for 张三 is a typical pinyin-IME slip, but also a genuinely different name: a person decides.
    result = score(Demographics("张三", BORN, "male"), Demographics("章三", BORN, "male"))
    assert result.band is Band.REVIEW
    assert result.reasons[0].startswith("name: pinyin equal, characters differ")


def test_same_name_different_birth_date_is_new() -> None:
    # Chosen: NEW. Namesakes are common (张伟 alone is some 300,000 people) and the birth date is what
    # tells them apart; a plain mismatch (not a transposition or one-digit slip, which earn partial
    # credit) means another person, and sending every namesake to review would flood the queue.
    a = Demographics("张三", BORN, "male")
    b = Demographics("张三", dt.date(1985, 7, 2), "male")
    assert score(a, b).band is Band.NEW
    assert score(Demographics("张三", BORN), Demographics("张三", dt.date(1985, 7, 2))).band is Band.NEW


@pytest.mark.parametrize(
    ("one", "other", "reason"),
    [
        (dt.date(1990, 3, 4), dt.date(1990, 4, 3), "birth_date: day and month transposed"),
        (BORN, dt.date(1991, 3, 14), "birth_date: one digit differs"),
    ],
)
def test_near_birth_date_goes_to_review(one: dt.date, other: dt.date, reason: str) -> None:
    result = score(Demographics("张三", one, "male"), Demographics("张三", other, "male"))
    assert result.band is Band.REVIEW
    assert result.reasons[1] == reason


def test_different_sex_is_not_linked_and_not_reviewed() -> None:
    a = Demographics("张三", BORN, "male", "13800138000")
    b = Demographics("张三", BORN, "female", "13800138000")
    result = score(a, b)
    assert result.band is not Band.LINK
    assert result.score < Thresholds().review
    assert "sex: differs (veto)" in result.reasons


def test_completely_different_is_new() -> None:
    a = Demographics("张三", BORN, "male", "13800138000")
    b = Demographics("李四", dt.date(1970, 1, 1), "female", "13912345678")
    result = score(a, b)
    assert result.band is Band.NEW
    assert result.score == 0.0


def test_a_name_alone_never_links() -> None:
    result = score(Demographics("张三", sex="male"), Demographics("张三", sex="male"))
    assert result.band is Band.REVIEW
    assert result.reasons[-1].startswith("capped below link")


def test_missing_fields_neither_add_nor_subtract() -> None:
    full = score(Demographics("张三", BORN), Demographics("张三", BORN))
    one_sided = score(Demographics("张三", BORN, "male", "13800138000"), Demographics("张三", BORN))
    assert full.score == one_sided.score == 1.0
    assert "phone: missing" in one_sided.reasons and "sex: missing" in one_sided.reasons


def test_nothing_to_compare_is_new() -> None:
    result = score(Demographics(""), Demographics("张三", BORN))
    assert result == MatchScore(
        0.0, Band.NEW, ("name: missing", "birth_date: missing", "sex: missing", "phone: missing")
    )


# ------------------------------------------------------------------------------------------- policy as data


def test_thresholds_are_policy() -> None:
    a, b = Demographics("张三", BORN, "male"), Demographics("章三", BORN, "male")
    assert score(a, b, Thresholds(link=0.80, review=0.50)).band is Band.LINK
    assert score(a, b, Thresholds(link=0.95, review=0.90)).band is Band.NEW


def test_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        Thresholds(link=0.5, review=0.7)
    with pytest.raises(ValueError):
        Thresholds(link=1.5)


def test_weights_can_be_swapped() -> None:
    a, b = Demographics("张三", BORN, "male"), Demographics("章三", BORN, "male")
    trusting = dataclasses.replace(Weights(), name_homophone=Weights().name_exact)
    assert score(a, b).band is Band.REVIEW
    assert score(a, b, weights=trusting).band is Band.LINK


def test_weights_must_be_ordered() -> None:
    with pytest.raises(ValueError):
        Weights(phone_equal=-5.0)
    with pytest.raises(ValueError):
        Weights(name_similar=20.0)


# ---------------------------------------------------------------------------------- best_match, blocking


def test_best_match_empty() -> None:
    key, result = best_match(Demographics("张三", BORN), [])
    assert key is None
    assert result.band is Band.NEW


def test_best_match_picks_the_highest() -> None:
    existing = [
        ("p1", Demographics("李四", BORN, "male")),
        ("p2", Demographics("章三", BORN, "male")),
        ("p3", Demographics("張三", BORN, "male")),
        ("p4", Demographics("张三", BORN, "male")),  # ties with p3: the first wins
    ]
    key, result = best_match(Demographics("张三", BORN, "male"), iter(existing))
    assert key == "p3"
    assert result.band is Band.LINK


def test_blocking_keys() -> None:
    keys = blocking_keys(Demographics("San Zhang", BORN, phone="+86 138-0013-8000"))
    assert keys == {"n:zhangsan", "n:sanzhang", "b:1990-03-14", "p:13800138000"}
    assert blocking_keys(Demographics("张三")) == {"n:zhangsan"}
    # Every form of the name can be fetched by the same key.
    assert blocking_keys(Demographics("張三")) & blocking_keys(Demographics("ZHANG, San"))


# ------------------------------------------------------------------------------------------- properties

# A small pool makes equal, homophone, similar and cross-script pairs likely; arbitrary text covers the rest.
NAME_POOL = [
    "张三",
    "張三",
    "章三",
    "张山",
    "Zhang San",
    "San ZHANG",
    "ZHANG, San",
    "李四",
    "Li Si",
    "曾凡",
    "Zeng Fan",
    "欧阳 娜娜",
    "",
    "·",
]
names = st.one_of(
    st.sampled_from(NAME_POOL),
    st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=4),
    st.text(max_size=12),
)
DATE_POOL = [BORN, dt.date(1990, 3, 4), dt.date(1990, 4, 3), dt.date(1991, 3, 14)]
dates = st.one_of(st.none(), st.sampled_from(DATE_POOL), st.dates(dt.date(1900, 1, 1), dt.date(2030, 12, 31)))
sexes = st.sampled_from([None, "male", "female", "M", "女", "unknown"])
phones = st.one_of(
    st.none(),
    st.sampled_from(["13800138000", "+86 138-0013-8000", "13912345678", "028-8888-8888"]),
    st.from_regex(r"(\+86 ?|0086)?1[3-9][0-9]{9}", fullmatch=True),
    st.text(alphabet="0123456789 +-()", max_size=16),
)
demographics = st.builds(Demographics, name=names, birth_date=dates, sex=sexes, phone=phones)


@given(demographics, demographics)
def test_score_is_symmetric(a: Demographics, b: Demographics) -> None:
    assert score(a, b) == score(b, a)


@given(demographics, demographics)
def test_score_is_within_0_and_1_and_banded(a: Demographics, b: Demographics) -> None:
    result = score(a, b)
    assert 0.0 <= result.score <= 1.0
    assert result.band is Thresholds().band(result.score)


@given(demographics)
def test_a_record_links_to_itself(a: Demographics) -> None:
    # "Has a name": one with at least one letter; "·" or "" is no name at all.
    assume(name_keys(a.name) and a.birth_date is not None)
    result = score(a, a)
    assert result.band is Band.LINK
    assert result.score == 1.0
