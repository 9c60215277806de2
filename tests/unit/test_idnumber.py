"""Tests for federation.identity.idnumber: GB 11643 ID numbers, parsing, masking and log scrubbing."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from federation.identity.idnumber import (
    DIGIT_RUN,
    ID_NUMBER_PATTERN,
    IdNumber,
    InvalidIdNumber,
    check_digit,
    is_valid_id_number,
    looks_like_id_number,
    mask_id_number,
    mask_id_numbers_in_text,
    parse_id_number,
    upgrade_15_to_18,
)

TODAY = dt.date(2025, 6, 1)
BEIJING = "11010519491231002X"


def complete(first17: str) -> str:
    return first17 + check_digit(first17)


CHONGQING = complete("50010319800101123")  # 渝中区, born before Chongqing's 1997 codes existed
CHENGDU = complete("51010419900101124")  # 锦江区
OLD_SICHUAN_CHONGQING = complete("51020219850101123")  # Sichuan-era Chongqing code, retired in 1997
WANZHOU = complete("50010119700101123")  # [1997-1997]万县区,[1998-]万州区


def parse(raw: str) -> IdNumber:
    return parse_id_number(raw, today=TODAY)


def rejection(raw: str, *, today: dt.date = TODAY) -> InvalidIdNumber:
    with pytest.raises(InvalidIdNumber) as info:
        parse_id_number(raw, today=today)
    return info.value


# --- check digit and upgrade -------------------------------------------------------------------------


def test_check_digit_known_values() -> None:
    assert check_digit("11010519491231002") == "X"
    assert check_digit("36042619910101007") == "1"  # python-stdnum's doctest number


@pytest.mark.parametrize("bad", ["", "1101051949123100", "110105194912310021", "1101051949123100A"])
def test_check_digit_needs_17_digits(bad: str) -> None:
    with pytest.raises(ValueError):
        check_digit(bad)


def test_upgrade_15_to_18() -> None:
    assert upgrade_15_to_18("110105491231002") == BEIJING


def test_upgrade_rejects_other_lengths() -> None:
    with pytest.raises(InvalidIdNumber) as info:
        upgrade_15_to_18(BEIJING)
    assert info.value.code == "id_number.length"


# --- valid numbers -----------------------------------------------------------------------------------


def test_beijing_example() -> None:
    n = parse(BEIJING)
    assert n.value == BEIJING
    assert n.birth_date == dt.date(1949, 12, 31)
    assert n.sex == "female"
    assert n.region_code == "110105"
    assert n.province == "北京市"
    assert n.place == "朝阳区"
    assert n.upgraded_from_15 is False
    assert n.warnings == ()


def test_chongqing_number_with_birth_before_1997_is_valid() -> None:
    n = parse(CHONGQING)
    assert n.birth_date == dt.date(1980, 1, 1)
    assert n.sex == "male"
    assert (n.province, n.place) == ("重庆市", "渝中区")
    assert n.warnings == ()


def test_chengdu_number() -> None:
    n = parse(CHENGDU)
    assert (n.province, n.place, n.sex) == ("四川省", "锦江区", "female")


def test_old_sichuan_code_for_chongqing_stays_valid() -> None:
    n = parse(OLD_SICHUAN_CHONGQING)
    assert n.region_code == "510202"
    assert n.province == "四川省"
    assert n.place == "渝中区"  # the name in the latest period the code was in use
    assert n.warnings == ()


def test_place_is_the_latest_name_for_the_code() -> None:
    assert parse(WANZHOU).place == "万州区"


def test_15_digit_number_is_upgraded() -> None:
    n = parse("110105491231002")
    assert n.value == BEIJING
    assert n.upgraded_from_15 is True
    assert n.birth_date == dt.date(1949, 12, 31)
    assert n.sex == "female"


def test_unknown_county_in_valid_province_is_a_warning() -> None:
    n = parse(complete("50990119800101123"))
    assert n.province == "重庆市"
    assert n.place is None
    assert n.warnings == ("region code 509901 not in the reference table",)


@pytest.mark.parametrize("first17", ["71000019800101123", "81000019800101123", "82000019800101123"])
def test_taiwan_hong_kong_macao_codes(first17: str) -> None:
    n = parse(complete(first17))
    assert n.province is not None
    assert n.warnings == ()


def test_taiwan_residence_permit_code() -> None:
    n = parse(complete("83000019800101123"))
    assert n.region_code == "830000"
    assert n.warnings == ()


@pytest.mark.parametrize(("first17", "province"), [("91125019800101123", "北京市"), ("95025019800101123", "重庆市")])
def test_foreign_permanent_resident_number(first17: str, province: str) -> None:
    n = parse(complete(first17))
    assert n.province == province
    assert n.place is None
    assert "nationality code" in n.warnings[0]


def test_is_valid_id_number() -> None:
    assert is_valid_id_number(BEIJING)
    assert is_valid_id_number(CHONGQING)
    assert not is_valid_id_number(BEIJING[:-1] + "1")
    assert not is_valid_id_number("")
    assert not is_valid_id_number(None)  # type: ignore[arg-type]


def test_repr_does_not_show_the_number() -> None:
    assert BEIJING not in repr(parse(BEIJING))


# --- normalisation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "11010519491231002x",
        "  11010519491231002X\n",
        "110105 19491231 002X",
        "110105-19491231-002x",
        "１１０１０５１９４９１２３１００２Ｘ",  # full-width
        "１１０１０５　１９４９１２３１　００２ｘ",  # full-width with ideographic spaces
    ],
)
def test_normalisation(raw: str) -> None:
    assert parse(raw).value == BEIJING


# --- invalid numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code", "reason"),
    [
        ("", "id_number.length", "has 0 characters; an ID number has 18 (or 15 for the old format)"),
        (
            BEIJING[:-1],
            "id_number.length",
            "has 17 characters; an ID number has 18 (or 15 for the old format)",
        ),
        (BEIJING + "1", "id_number.length", "has 19 characters"),
        (
            "1101A519491231002X",
            "id_number.format",
            "character 5 is 'A'; only digits and a final X are allowed",
        ),
        ("11010519491231X021", "id_number.format", "character 15 is 'X'"),
        ("110105491231002X", "id_number.length", "has 16 characters"),
        (
            "11010549123100X",
            "id_number.format",
            "character 15 is 'X'; the old 15-character format has only digits",
        ),
        ("110105194912310023", "id_number.checksum", "check digit should be X, got 3"),
        (complete("11010519900230002"), "id_number.birth_date", "birth date 1990-02-30 is not a real date"),
        (complete("11010519901301002"), "id_number.birth_date", "birth date 1990-13-01 is not a real date"),
        ("110105900230002", "id_number.birth_date", "birth date 1990-02-30 is not a real date"),
        (complete("11010520250602002"), "id_number.birth_date", "birth date 2025-06-02 is in the future"),
        (complete("11010518791231002"), "id_number.birth_date", "birth date 1879-12-31 is before 1880-01-01"),
        (complete("19010519491231002"), "id_number.region", "region code 190105 starts with 19"),
        (complete("99010519491231002"), "id_number.region", "province code after the 9, got 90"),
        (complete("00010519491231002"), "id_number.region", "not a province-level code"),
        (complete("20010519491231002"), "id_number.region", "not a province-level code"),
        (complete("84000019491231002"), "id_number.region", "not a province-level code"),
        (complete("91625019800101123"), "id_number.region", "province code after the 9, got 16"),
        ("950250800101123", "id_number.region", "cannot start with 9"),
    ],
)
def test_invalid(raw: str, code: str, reason: str) -> None:
    error = rejection(raw)
    assert error.code == code
    assert reason in error.reason
    assert str(error) == error.reason


def test_birth_today_is_valid_but_tomorrow_is_not() -> None:
    number = complete("51010420250601002")
    assert parse(number).birth_date == TODAY
    assert rejection(number, today=TODAY - dt.timedelta(days=1)).code == "id_number.birth_date"


def test_earliest_birth_date_is_valid() -> None:
    assert parse(complete("11010518800101002")).birth_date == dt.date(1880, 1, 1)


def test_errors_never_contain_the_number() -> None:
    for raw in (BEIJING[:-1] + "3", complete("19010519491231002"), complete("11010520250602002")):
        assert raw not in rejection(raw).reason


# --- masking -----------------------------------------------------------------------------------------


def test_mask_18() -> None:
    masked = mask_id_number(BEIJING)
    assert masked == "110105********002X"
    assert "19491231" not in masked


def test_mask_15() -> None:
    assert mask_id_number("110105491231002") == "110105*****1002"


def test_mask_normalises_first() -> None:
    assert mask_id_number("110105 19491231 002x") == "110105********002X"


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("", ""),
        ("1234", "****"),
        ("1234567", "*******"),
        ("12345678", "****5678"),
        ("11010519491", "*******9491"),
    ],
)
def test_mask_short_strings(value: str, masked: str) -> None:
    assert mask_id_number(value) == masked


# --- free text ---------------------------------------------------------------------------------------


def test_mask_in_log_line() -> None:
    random_run = "123456789012345678"
    assert check_digit(random_run[:17]) != random_run[17]
    embedded = "1" + CHONGQING + "1"  # a valid number inside a 20-digit run
    assert len(embedded) == 20
    line = f"login ok id={BEIJING} order={random_run} trace={embedded} old=110105491231002."
    out = mask_id_numbers_in_text(line)
    assert out == (f"login ok id=110105********002X order={random_run} trace={embedded} old=110105*****1002.")
    assert BEIJING not in out


def test_mask_in_text_variants() -> None:
    assert mask_id_numbers_in_text(f"身份证号{BEIJING.lower()}。") == "身份证号110105********002X。"
    assert mask_id_numbers_in_text(f"ID{CHONGQING}") == "ID500103********" + CHONGQING[-4:]
    full_width = "１１０１０５１９４９１２３１００２Ｘ"
    assert mask_id_numbers_in_text(f"[{full_width}]") == "[110105********002X]"
    assert mask_id_numbers_in_text("no numbers here") == "no numbers here"


def test_invalid_15_digit_run_is_left_alone() -> None:
    assert mask_id_numbers_in_text("x 110105900230002 x") == "x 110105900230002 x"


def test_pattern_respects_digit_boundaries() -> None:
    assert [m.group(0) for m in ID_NUMBER_PATTERN.finditer(f"a {BEIJING} b")] == [BEIJING]
    assert ID_NUMBER_PATTERN.search("9" + BEIJING) is None  # 18 digits and an X
    assert ID_NUMBER_PATTERN.search("9" + CHONGQING) is None
    assert ID_NUMBER_PATTERN.search(BEIJING[:-1] + "01") is None  # 19 digits
    assert ID_NUMBER_PATTERN.search("1234567890123456") is None  # 16 digits


def test_looks_like_id_number() -> None:
    assert looks_like_id_number(BEIJING)
    assert looks_like_id_number(" 11010519491231002x ")
    assert looks_like_id_number("110105491231002")
    assert looks_like_id_number("110105194912310023")  # shape only, checksum not checked
    assert not looks_like_id_number("alice")
    assert not looks_like_id_number("1101051949123100")
    assert not looks_like_id_number("X10105194912310023")


# --- properties --------------------------------------------------------------------------------------

PROVINCES = [
    *("11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41"),
    *("42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65"),
    *("71", "81", "82", "83"),
]


@st.composite
def first17s(draw: st.DrawFn) -> str:
    province = draw(st.sampled_from(PROVINCES))
    county = draw(st.from_regex(re.compile(r"[0-9]{4}", re.ASCII), fullmatch=True))
    born = draw(st.dates(min_value=dt.date(1880, 1, 1), max_value=TODAY))
    sequence = draw(st.from_regex(re.compile(r"[0-9]{3}", re.ASCII), fullmatch=True))
    return province + county + born.strftime("%Y%m%d") + sequence


@given(first17s())
def test_check_digit_makes_valid_and_any_single_change_invalid(first17: str) -> None:
    number = first17 + check_digit(first17)
    parsed = parse(number)
    assert parsed.value == number
    for i, original in enumerate(number):
        for replacement in "0123456789X" if i == 17 else "0123456789":
            if replacement == original:
                continue
            changed = number[:i] + replacement + number[i + 1 :]
            assert not is_valid_id_number(changed)
            with pytest.raises(InvalidIdNumber):
                parse(changed)


@given(first17s())
def test_mask_never_reveals_the_birth_date(first17: str) -> None:
    number = first17 + check_digit(first17)
    masked = mask_id_number(number)
    assert masked[:6] == number[:6] and masked[-4:] == number[-4:]
    assert set(masked[6:-4]) == {"*"}
    assert mask_id_numbers_in_text(f"<{number}>") == f"<{masked}>"


@given(
    st.lists(
        st.one_of(first17s().map(lambda f: f + check_digit(f)), st.text("0123456789０１２３Xx -", max_size=24)),
        max_size=4,
    ).map("".join)
)
def test_every_text_holding_an_id_number_holds_a_run_of_fifteen_digits(text: str) -> None:
    """DIGIT_RUN is the cheap first test before ID_NUMBER_PATTERN: it must never miss what the pattern finds."""
    if ID_NUMBER_PATTERN.search(text):
        assert DIGIT_RUN.search(text)
    if not DIGIT_RUN.search(text):
        assert mask_id_numbers_in_text(text) == text
