"""MARC21 and UNIMARC/CNMARC -> BibRecord, field by field, for every format and encoding of our corpus; items."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from stdnum import isbn as stdnum_isbn

from library.catalog import holdings as h
from library.catalog.mapping import MappingError, _isbns, clean, to_bib
from library.catalog.marc import Format, RawRecord, read
from library.catalog.records import BibRecord, Item, Name
from tests.fixtures import marc_corpus as mc

# control number -> title, first author, ISBN-13s, year, CLC, language
EXPECTED = {
    "TC0000001": ("红楼梦", "曹雪芹", ("9787020002207",), 1982, ("I242.4",), "chi"),
    "TC0000002": ("三体", "刘慈欣", ("9787536692930",), 2008, ("I247.55",), "chi"),
    "TC0000003": ("Cien años de soledad", "García Márquez, Gabriel", ("9788437604947",), 1987, ("I775.45",), "spa"),
    "TC0000004": ("西游记", "Wu, Cheng'en", ("9787020008728",), 2005, ("I242.4",), "chi"),
    "TC0000005": ("刘䶮与南汉", "陈明", ("9787101000009",), 2019, ("K243.07",), "chi"),
}

SOURCES = {
    "marc21 iso2709 utf-8": (mc.marc21_utf8, {}, "marc21", ["TC0000001", "TC0000002", "TC0000003", "TC0000004"]),
    "marc21 iso2709 marc-8": (mc.marc21_marc8, {}, "marc21", ["TC0000001", "TC0000002", "TC0000003", "TC0000004"]),
    "marcxml": (mc.marc21_xml, {}, None, ["TC0000001", "TC0000002", "TC0000003", "TC0000004", "TC0000002"]),
    "marc-in-json ndjson": (mc.marc21_ndjson, {}, "marc21", ["TC0000001", "TC0000002", "TC0000003", "TC0000004"]),
    "marc-in-json array": (mc.marc21_json_array, {}, "marc21", ["TC0000001", "TC0000002", "TC0000003", "TC0000004"]),
    "unimarc utf-8": (lambda: mc.unimarc("utf-8"), {}, "unimarc", ["TC0000001", "TC0000002", "TC0000003", "TC0000005"]),
    "unimarc gbk": (lambda: mc.unimarc("gbk"), {}, "unimarc", ["TC0000001", "TC0000002"]),
    "unimarc gbk forced": (lambda: mc.unimarc("gbk"), {"encoding": "gbk"}, "unimarc", ["TC0000001", "TC0000002"]),
    "unimarc gb18030": (
        lambda: mc.unimarc("gb18030"),
        {},
        "unimarc",
        ["TC0000001", "TC0000002", "TC0000003", "TC0000005"],
    ),
    "unimarc gb2312": (lambda: mc.unimarc("gb2312"), {}, "unimarc", ["TC0000001", "TC0000002"]),
    "unimarc gb2312 forced": (
        lambda: mc.unimarc("gb2312"),
        {"encoding": "gb2312"},
        "unimarc",
        ["TC0000001", "TC0000002"],
    ),
    "unimarc forced format": (
        lambda: mc.unimarc("utf-8"),
        {"format": Format.UNIMARC},
        "unimarc",
        ["TC0000001", "TC0000002", "TC0000003", "TC0000005"],
    ),
}


def bibs(data: bytes, **kwargs: object) -> list[BibRecord]:
    out = []
    for item in read(data, **kwargs):  # type: ignore[arg-type]
        assert isinstance(item, RawRecord), item
        out.append(to_bib(item, library="CD"))
    return out


@pytest.mark.parametrize("source", SOURCES)
def test_every_format_and_encoding_maps_the_same_fields(source: str) -> None:
    make, kwargs, dialect, control_numbers = SOURCES[source]
    got = bibs(make(), **kwargs)
    assert [b.control_number for b in got] == control_numbers
    for bib in got:
        title, author, isbns, year, clc, language = EXPECTED[bib.control_number]
        assert bib.title == title
        assert bib.first_author == author
        assert bib.isbns == isbns
        assert bib.year == year
        assert bib.clc == clc
        assert bib.language == language
        if dialect:
            assert bib.dialect == dialect


# --------------------------------------------------------------------------- MARC21 in detail


def marc21(spec: mc.MarcSpec) -> BibRecord:
    (raw,) = read(mc.iso2709(spec))
    assert isinstance(raw, RawRecord), raw
    return to_bib(raw, library="CD")


def test_marc21_full_record() -> None:
    bib = marc21(mc.marc21_spec(mc.HONGLOUMENG))
    assert bib.control_number == "TC0000001"
    assert bib.title == "红楼梦" and bib.subtitle is None and bib.responsibility == "曹雪芹著"
    assert bib.names == (Name("曹雪芹", "author"),)
    assert (bib.place, bib.publisher, bib.year) == ("北京", "人民文学出版社", 1982)
    assert bib.isbns == ("9787020002207",)
    assert bib.invalid_isbns == ("9787020002208",)
    assert bib.subjects == ("章回小说 -- 中国 -- 清代",)
    assert bib.edition == "第3版"
    assert bib.physical == "2册 ; 21 cm."
    assert bib.format == "book" and not bib.deleted
    assert bib.version == "20240115103000.0"
    assert bib.date_entered == "2024-01-15"
    assert bib.items == ()  # no holdings config, no items


def test_marc21_880_vernacular_pairing() -> None:
    bib = marc21(mc.xiyouji_spec())
    assert bib.title == "西游记"  # the vernacular is the display title when the 245 is romanised
    assert bib.title_vernacular == "西游记"
    assert bib.title_romanised == "Xi you ji"
    assert bib.responsibility == "吴承恩著"
    assert bib.names == (
        Name("Wu, Cheng'en", "author", vernacular="吴承恩"),
        Name("Huang, Zhouxing", "editor"),
    )
    assert (bib.place, bib.publisher, bib.year) == ("北京", "人民文学出版社", 2005)
    assert bib.subjects == ("Chinese fiction -- Ming dynasty, 1368-1644",)


def test_marc21_vernacular_245_keeps_its_title_and_romanised_880_is_recorded() -> None:
    spec = mc.MarcSpec(
        mc.LEADER_MARC21,
        (
            ("001", "V1"),
            ("245", "10", [("6", "880-01"), ("a", "红楼梦 /"), ("c", "曹雪芹.")]),
            ("880", "10", [("6", "245-01"), ("a", "Hong lou meng /")]),
        ),
    )
    bib = marc21(spec)
    assert (bib.title, bib.title_vernacular, bib.title_romanised) == ("红楼梦", "Hong lou meng", "Hong lou meng")


def test_marc21_variants() -> None:
    spec = mc.MarcSpec(
        "00000dam a2200000 i 4500",  # leader/05 d: deleted
        (
            ("001", " X9 "),
            ("008", "991231s1999    xxu                 |||  "),  # language blank-ish: 041 decides
            ("020", "  ", [("a", "0-306-40615-2")]),  # ISBN-10 with hyphens
            ("020", "  ", [("a", "(pbk.)")]),
            ("020", "  ", [("a", "12345")]),
            ("022", "  ", [("a", "0317-8471")]),
            ("022", "  ", [("a", "1234-5678")]),  # bad check digit: dropped
            ("041", "0 ", [("a", "engfre")]),
            ("050", " 4", [("a", "QA76.73.P98"), ("b", "L877 2013")]),
            ("082", "04", [("a", "005.13/3"), ("2", "23")]),
            ("084", "  ", [("a", "TP311.56"), ("2", "clc")]),
            ("084", "  ", [("a", "54.53"), ("2", "bkl")]),
            ("110", "2 ", [("a", "World Bank."), ("b", "Research Dept.")]),
            ("111", "2 ", [("a", "Conference on Tea"), ("j", "editor.")]),
            (
                "245",
                "00",
                [("a", "Learning Python :"), ("b", "powerful object-oriented programming /"), ("c", "Mark Lutz.")],
            ),
            ("250", "  ", [("a", "5th ed.")]),
            ("260", "  ", [("a", "[S.l.] :"), ("b", "O'Reilly,"), ("c", "[c19--?]")]),
            ("300", "  ", [("a", "xlix, 1540 p. :"), ("b", "ill. ;"), ("c", "24 cm.")]),
            ("490", "1 ", [("a", "Animal guide ;"), ("v", "5")]),
            ("600", "10", [("a", "Lutz, Mark,"), ("d", "1960-"), ("x", "Criticism.")]),
            ("651", " 0", [("a", "Chengdu (China)"), ("x", "History"), ("y", "21st century.")]),
            ("700", "1 ", [("a", "Doe, Jane,"), ("4", "trl")]),
            ("710", "2 ", [("a", "O'Reilly Media.")]),
            ("830", " 0", [("a", "Animal guide.")]),
        ),
    )
    bib = marc21(spec)
    assert bib.control_number == "X9"
    assert bib.deleted is True
    assert bib.isbns == ("9780306406157",)
    assert bib.invalid_isbns == ("12345",)
    assert bib.issns == ("0317-8471",)
    assert bib.language == "eng"
    assert bib.clc == ("TP311.56",)
    assert bib.classifications == (("bkl", "54.53"), ("ddc", "005.133"), ("lcc", "QA76.73.P98 L877 2013"))
    assert bib.title == "Learning Python"
    assert bib.subtitle == "powerful object-oriented programming"
    assert bib.responsibility == "Mark Lutz"
    assert bib.names == (
        Name("World Bank. Research Dept", "author", corporate=True),
        Name("Conference on Tea", "editor", corporate=True),
        Name("Doe, Jane", "translator"),
        Name("O'Reilly Media", "corporate", corporate=True),
    )
    assert bib.first_author == "World Bank. Research Dept"
    assert bib.edition == "5th ed."
    assert (bib.place, bib.publisher, bib.year) == (None, "O'Reilly", 1999)  # year from 008/07-10
    assert bib.physical == "xlix, 1540 p. : ill. ; 24 cm."
    assert bib.series == ("Animal guide",)
    assert bib.subjects == ("Lutz, Mark, 1960- -- Criticism", "Chengdu (China) -- History -- 21st century")
    assert bib.date_entered == "1999-12-31"


@pytest.mark.parametrize(
    ("leader", "expected"),
    [
        ("00000nam a2200000 i 4500", "book"),
        ("00000nas a2200000 i 4500", "serial"),
        ("00000nem a2200000 i 4500", "map"),
        ("00000ncm a2200000 i 4500", "score"),
        ("00000njm a2200000 i 4500", "music"),
        ("00000ngm a2200000 i 4500", "video"),
        ("00000nmm a2200000 i 4500", "electronic"),
    ],
)
def test_marc21_format_from_leader(leader: str, expected: str) -> None:
    assert marc21(mc.MarcSpec(leader, (("001", "F1"), ("245", "00", [("a", "T")])))).format == expected


def test_record_without_control_number_is_a_mapping_error() -> None:
    (raw,) = read(mc.iso2709(mc.MarcSpec(mc.LEADER_MARC21, (("245", "00", [("a", "No id")]),))))
    with pytest.raises(MappingError):
        to_bib(raw, library="CD")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("红楼梦 /", "红楼梦"),
        ("Title :", "Title"),
        ("Title ;", "Title"),
        ("Title =", "Title"),
        ("Cao, Xueqin,", "Cao, Xueqin"),
        ("Smith, J.", "Smith, J."),
        ("2nd ed.", "2nd ed."),
        ("U.S.A.", "U.S.A."),
        ("And then...", "And then..."),
        ("The end.", "The end"),
        ("Hello world. /", "Hello world"),
        ("  ", ""),
        (None, ""),
    ],
)
def test_clean_strips_isbd_punctuation(value: str | None, expected: str) -> None:
    assert clean(value) == expected


def test_isbn_fast_path_agrees_with_stdnum() -> None:
    rng = random.Random(1)
    for _ in range(2_000):
        stem = rng.choice(["978", "979", "977"]) + "".join(rng.choice("0123456789") for _ in range(9))
        for check in "0123456789"[rng.randrange(10) :][:3]:
            number = stem + check
            good, bad = _isbns([number])
            if stdnum_isbn.is_valid(number):
                assert good == (stdnum_isbn.to_isbn13(number),)
            else:
                assert good == () and bad == (number,)


# --------------------------------------------------------------------------- UNIMARC in detail


def unimarc(spec: mc.MarcSpec, encoding: str = "utf-8") -> BibRecord:
    (raw,) = read(mc.iso2709(spec, encoding))
    assert isinstance(raw, RawRecord), raw
    assert raw.dialect == "unimarc"
    return to_bib(raw, library="CQ")


def test_cnmarc_full_record() -> None:
    bib = unimarc(mc.unimarc_spec(mc.SANTI), "gbk")
    assert bib.dialect == "unimarc"
    assert bib.title == "三体" and bib.title_romanised == "San ti"
    assert bib.responsibility == "刘慈欣著"
    assert bib.names == (Name("刘慈欣", "author"),)
    assert (bib.place, bib.publisher, bib.year) == ("重庆", "重庆出版社", 2008)
    assert bib.isbns == ("9787536692930",)
    assert bib.language == "chi"
    assert bib.subjects == ("科学幻想小说 -- 中国 -- 当代",)
    assert bib.clc == ("I247.55",)
    assert bib.series == ("中国科幻基石丛书",)
    assert bib.physical == "302页 ; 21cm"
    assert bib.date_entered == "2024-01-15"
    assert bib.version == "20240115103000.0"


def test_unimarc_variants() -> None:
    hundred = "20230102d2015    km y0chiy50      ea"
    spec = mc.MarcSpec(
        "00000cam0 2200000   450 ",
        (
            ("001", "U1"),
            ("010", "  ", [("a", "7-5366-9293-5"), ("d", "CNY20.00")]),
            ("011", "  ", [("a", "0317-8471")]),
            ("100", "  ", [("a", hundred)]),
            ("101", "1 ", [("a", "chi"), ("c", "eng")]),
            ("200", "1 ", [("a", "第一部"), ("a", "第二部"), ("e", "合集"), ("f", "张三著"), ("g", "李四译")]),
            ("205", "  ", [("a", "修订本")]),
            ("214", " 0", [("a", "成都"), ("c", "四川人民出版社"), ("d", "[n.d.]")]),
            ("215", "  ", [("a", "312页"), ("c", "图"), ("d", "24cm"), ("e", "光盘1张")]),
            ("606", "0 ", [("a", "小说"), ("y", "中国"), ("z", "现代")]),
            ("686", "  ", [("a", "I246.5"), ("2", "clc")]),
            ("690", "  ", [("a", "I246.57"), ("v", "5")]),
            ("676", "  ", [("a", "895.13")]),
            ("700", " 1", [("a", "Zhang"), ("b", "San"), ("4", "070")]),
            ("701", " 0", [("a", "王五"), ("4", "340")]),
            ("702", " 0", [("a", "李四"), ("4", "730")]),
            ("710", "02", [("a", "四川大学"), ("b", "文学院")]),
            ("712", "02", [("a", "某基金会")]),
        ),
    )
    bib = unimarc(spec)
    assert bib.title == "第一部 ; 第二部"
    assert bib.subtitle == "合集"
    assert bib.responsibility == "张三著 ; 李四译"
    assert bib.names == (
        Name("Zhang, San", "author"),
        Name("王五", "editor"),
        Name("李四", "translator"),
        Name("四川大学. 文学院", "author", corporate=True),
        Name("某基金会", "corporate", corporate=True),
    )
    assert bib.isbns == ("9787536692930",)  # ISBN-10 converted
    assert bib.issns == ("0317-8471",)
    assert bib.language == "chi"
    assert (bib.place, bib.publisher, bib.year) == ("成都", "四川人民出版社", 2015)  # 214; year from 100 $a/9-12
    assert bib.edition == "修订本"
    assert bib.physical == "312页 : 图 ; 24cm + 光盘1张"
    assert bib.subjects == ("小说 -- 中国 -- 现代",)
    assert bib.clc == ("I246.57", "I246.5")
    assert bib.classifications == (("ddc", "895.13"),)
    assert bib.format == "book"
    assert bib.date_entered == "2023-01-02"


# --------------------------------------------------------------------------- items from MARC


def test_koha_952_items() -> None:
    (raw, *_rest) = read(mc.marc21_utf8())
    bib = to_bib(raw, library="CD", holdings=h.MARC21_952)
    assert bib.items == (
        Item("BTC00000011", "CD", "CD01", "I242.4/1", "BOOK", "available"),
        Item("BTC00000012", "CD", "CQ02", "I242.4/1", "BOOK", "lost"),
    )


def test_cnmarc_905_and_995_items() -> None:
    (raw, *_rest) = read(mc.unimarc("gb18030"))
    assert to_bib(raw, library="CD", holdings=h.CNMARC_905).items == (
        Item("000101", "CD", "中文书库", "I242.4/12", None, "available"),
    )
    assert to_bib(raw, library="CQ", holdings=h.CNMARC_995).items == (
        Item("900101", "CQ", "CQLIB", "I242.4/12", "BOOK", "available"),
    )


@pytest.mark.parametrize(
    ("config", "field", "expected"),
    [
        (
            h.MARC21_852,
            ("852", "01", [("a", "CDLIB"), ("b", "MAIN"), ("h", "I247.5"), ("i", "L58"), ("p", "3100001")]),
            Item("3100001", "CD", "MAIN", "I247.5 L58", None, "available"),
        ),
        (
            h.MARC21_949,
            ("949", " 1", [("a", "I247.5 L58"), ("i", "3100002"), ("l", "cdref"), ("t", "2"), ("s", "o")]),
            Item("3100002", "CD", "cdref", "I247.5 L58", "2", "not_for_loan"),
        ),
        (
            h.MARC21_949,
            ("949", " 1", [("i", "3100003"), ("l", "cd"), ("s", "m")]),
            Item("3100003", "CD", "cd", None, None, "missing"),
        ),
        (
            h.MARC21_952,
            ("952", "  ", [("a", "CD01"), ("p", "3100004"), ("7", "2")]),
            Item("3100004", "CD", "CD01", None, None, "not_for_loan"),
        ),
        (
            h.MARC21_952,
            ("952", "  ", [("a", "CD01"), ("p", "3100005"), ("q", "2024-02-01"), ("0", "0")]),
            Item("3100005", "CD", "CD01", None, None, "on_loan"),
        ),
        (
            h.MARC21_952,
            ("952", "  ", [("a", "CD01"), ("p", "3100006"), ("0", "1"), ("1", "1")]),
            Item("3100006", "CD", "CD01", None, None, "withdrawn"),
        ),
        (
            h.CNMARC_995,
            ("995", "  ", [("b", "CQ"), ("f", "3100007"), ("k", "I247/1"), ("r", "BK"), ("2", "1")]),
            Item("3100007", "CD", "CQ", "I247/1", "BK", "lost"),
        ),
    ],
)
def test_holdings_presets(config: h.HoldingsConfig, field: mc.FieldSpec, expected: Item) -> None:
    spec = mc.MarcSpec(
        mc.LEADER_MARC21,
        (("001", "H1"), ("245", "00", [("a", "T")]), field, (config.tag, "  ", [("a", "no barcode")])),
    )
    (raw,) = read(mc.iso2709(spec))
    assert to_bib(raw, library="CD", holdings=config).items == (expected,)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "available"),
        ("", "available"),
        ("0", "available"),
        ("Checked out", "on_loan"),
        ("借出", "on_loan"),
        ("丢失", "lost"),
        ("-1", "on_order"),
        ("3", "not_for_loan"),
        ("在架", "available"),
        ("Being bound at the bindery", "being_bound_at_the_b"),
    ],
)
def test_normalise_status(value: str | None, expected: str) -> None:
    assert h.normalise_status(value) == expected


# --------------------------------------------------------------------------- item feeds


def test_items_from_csv_utf8_with_bom(tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text(
        "Control_Number,barcode,library,location,call_number,item_type,status\n"
        "TC0000001,310001,CD,MAIN,I242.4/12,BOOK,借出\n"
        "TC0000001,,CD,MAIN,,BOOK,\n"  # no barcode: skipped
        "TC0000002,310002,,STACK,I247.55/3,,\n"  # library from the default
        "\n",
        encoding="utf-8-sig",
    )
    assert list(h.items_from_csv(path, library="CQ")) == [
        ("TC0000001", Item("310001", "CD", "MAIN", "I242.4/12", "BOOK", "on_loan")),
        ("TC0000002", Item("310002", "CQ", "STACK", "I247.55/3", None, "available")),
    ]


def test_items_from_csv_gb18030_tsv_is_sniffed(tmp_path: Path) -> None:
    path = tmp_path / "items.tsv"
    rows = [
        "control_number\tbarcode\tlibrary\tlocation\tcall_number\titem_type\tstatus",
        "TC0000002\t320001\tCQ\t中文书库\tI247.55/3\t图书\t丢失",
    ]
    path.write_bytes(("\n".join(rows) + "\n").encode("gb18030"))
    assert list(h.items_from_csv(path)) == [
        ("TC0000002", Item("320001", "CQ", "中文书库", "I247.55/3", "图书", "lost"))
    ]


def test_items_from_json_array_and_ndjson(tmp_path: Path) -> None:
    rows = [
        {"control_number": "TC0000001", "barcode": "310001", "library": "CD", "status": "on loan"},
        {"control_number": "TC0000002", "barcode": 310002, "library": "CD", "call_number": "I247.55/3"},
        {"control_number": "TC0000003"},  # no barcode: skipped
    ]
    expected = [
        ("TC0000001", Item("310001", "CD", None, None, None, "on_loan")),
        ("TC0000002", Item("310002", "CD", None, "I247.55/3", None, "available")),
    ]
    array, lines = tmp_path / "items.json", tmp_path / "items.ndjson"
    array.write_text(json.dumps(rows, ensure_ascii=False, indent=2), encoding="utf-8")
    lines.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n", encoding="utf-8")
    assert list(h.items_from_json(array)) == expected
    assert list(h.items_from_json(lines)) == expected


def test_with_items_adds_feed_items_once() -> None:
    (raw, *_rest) = read(mc.marc21_utf8())
    bib = to_bib(raw, library="CD", holdings=h.MARC21_952)
    extra = Item("NEW1", "CD")
    again = h.with_items(bib, [bib.items[0], extra])
    assert again.items == (*bib.items, extra)
    assert h.with_items(bib, []) is bib
