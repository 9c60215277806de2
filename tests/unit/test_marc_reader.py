"""The streaming MARC reader on the corpus we write ourselves: formats, encodings, detection and broken input."""

from __future__ import annotations

import io
import random
import tracemalloc
from pathlib import Path

import pytest

from library.catalog import marc
from library.catalog.marc import Encoding, Format, RawRecord, Rejection, detect_format, read
from tests.fixtures import marc_corpus as mc


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return mc.write_corpus(tmp_path_factory.mktemp("marc"))


def records(items: list) -> list[RawRecord]:
    return [i for i in items if isinstance(i, RawRecord)]


def title_a(raw: RawRecord) -> str:
    field = raw.record.get("245") if raw.dialect == "marc21" else raw.record.get("200")
    assert field is not None
    return field["a"]


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("marc21_utf8.mrc", Format.MARC21),
        ("marc21_marc8.mrc", Format.MARC21),
        ("marc21.xml", Format.MARCXML),
        ("marc21.ndjson", Format.MARCJSON),
        ("marc21.json", Format.MARCJSON),
        ("unimarc_utf8.mrc", Format.UNIMARC),
        ("unimarc_gbk.mrc", Format.UNIMARC),
        ("unimarc_gb18030.mrc", Format.UNIMARC),
        ("unimarc_gb2312.mrc", Format.UNIMARC),
    ],
)
def test_detect_format(corpus: dict[str, Path], name: str, expected: Format) -> None:
    assert detect_format(corpus[name].read_bytes()[:4096]) is expected


def test_detect_format_from_a_partial_first_record() -> None:
    # the directory alone tells the dialect, before the record is complete
    assert detect_format(mc.unimarc("utf-8")[:200]) is Format.UNIMARC
    assert detect_format(mc.marc21_utf8()[:200]) is Format.MARC21
    assert detect_format(b"\xef\xbb\xbf  \n<?xml version='1.0'?><collection/>") is Format.MARCXML
    assert detect_format(b"  [ {") is Format.MARCJSON


@pytest.mark.parametrize("head", [b"", b"   \n", b"hello world, not marc at all", b"\x00\x01\x02garbage"])
def test_detect_format_rejects_what_is_not_marc(head: bytes) -> None:
    with pytest.raises(ValueError):
        detect_format(head)


# --------------------------------------------------------------------------- formats and encodings

TITLES_MARC21 = ["红楼梦 /", "三体 /", "Cien años de soledad /", "Xi you ji /"]


@pytest.mark.parametrize(
    ("name", "encoding"),
    [
        ("marc21_utf8.mrc", "utf-8"),
        ("marc21_marc8.mrc", "marc-8"),
        ("marc21.ndjson", "utf-8"),
        ("marc21.json", "utf-8"),
    ],
)
def test_marc21_sources_read_the_same_records(corpus: dict[str, Path], name: str, encoding: str) -> None:
    items = list(read(corpus[name], library="CD"))
    assert all(isinstance(i, RawRecord) for i in items)
    assert [i.position for i in items] == [0, 1, 2, 3]
    assert [title_a(i) for i in items] == TITLES_MARC21
    assert {(i.dialect, i.encoding, i.library) for i in items} == {("marc21", encoding, "CD")}
    assert [i.record["001"].data for i in items] == ["TC0000001", "TC0000002", "TC0000003", "TC0000004"]
    # the vernacular 880s survive every encoding, EACC included
    xiyouji = items[3].record
    assert [f["a"] for f in xiyouji.get_fields("880")] == ["吴承恩,", "西游记 /", "北京 :"]


def test_marcxml_reads_marc21_and_unimarc_records_with_offsets(corpus: dict[str, Path]) -> None:
    data = corpus["marc21.xml"].read_bytes()
    items = list(read(corpus["marc21.xml"]))
    assert [type(i) for i in items] == [RawRecord] * 5
    assert [title_a(i) for i in items] == [*TITLES_MARC21, "三体"]
    assert [i.dialect for i in items] == ["marc21"] * 4 + ["unimarc"]
    for i in items:
        assert data[i.offset : i.offset + 7] == b"<record"


def test_iso2709_and_json_offsets_point_at_each_record(corpus: dict[str, Path]) -> None:
    data = corpus["marc21_utf8.mrc"].read_bytes()
    for item in read(corpus["marc21_utf8.mrc"]):
        length = int(data[item.offset : item.offset + 5])
        assert data[item.offset + length - 1] == 0x1D
    for name in ("marc21.ndjson", "marc21.json"):
        data = corpus[name].read_bytes()
        assert [data[i.offset : i.offset + 1] for i in read(corpus[name])] == [b"{"] * 4


@pytest.mark.parametrize(
    ("name", "titles", "encoding"),
    [
        ("unimarc_utf8.mrc", ["红楼梦", "三体", "Cien años de soledad", "刘䶮与南汉"], "utf-8"),
        ("unimarc_gbk.mrc", ["红楼梦", "三体"], "gb18030"),  # declares 50 (UTF-8) but is GBK
        ("unimarc_gb18030.mrc", ["红楼梦", "三体", "Cien años de soledad", "刘䶮与南汉"], "gb18030"),
        ("unimarc_gb2312.mrc", ["红楼梦", "三体"], "gb18030"),
    ],
)
def test_unimarc_encodings_are_detected(corpus: dict[str, Path], name: str, titles: list[str], encoding: str) -> None:
    items = list(read(corpus[name]))
    assert [title_a(i) for i in items] == titles
    assert {(i.dialect, i.encoding) for i in items} == {("unimarc", encoding)}


def test_gb18030_characters_outside_gbk_survive(corpus: dict[str, Path]) -> None:
    liu_yan = list(read(corpus["unimarc_gb18030.mrc"]))[3]
    assert liu_yan.record["200"]["a"] == "刘䶮与南汉"
    assert liu_yan.record["200"]["e"] == "附𠀀字考"
    # GBK cannot carry them: forced, that record (and ñ in Cien años) is rejected, naming the field
    forced = list(read(corpus["unimarc_gb18030.mrc"], encoding=Encoding.GBK))
    assert [type(i) for i in forced] == [RawRecord, RawRecord, Rejection, Rejection]
    assert [i.encoding for i in records(forced)] == ["gbk", "gbk"]
    assert all("field 200" in i.reason and "gbk" in i.reason for i in forced[2:])
    assert [i.control_number for i in forced[2:]] == ["TC0000003", "TC0000005"]


@pytest.mark.parametrize(
    ("name", "encoding"),
    [
        ("unimarc_gbk.mrc", Encoding.GBK),
        ("unimarc_gb2312.mrc", Encoding.GB2312),
        ("unimarc_gb18030.mrc", Encoding.GB18030),
    ],
)
def test_forced_encoding_is_used_and_reported(corpus: dict[str, Path], name: str, encoding: Encoding) -> None:
    items = list(read(corpus[name], encoding=encoding))
    assert records(items) == items
    assert {i.encoding for i in items} == {encoding.value}
    assert title_a(items[0]) == "红楼梦"


def test_forcing_latin1_reads_utf8_bytes_as_latin1() -> None:
    (item, *_rest) = read(mc.marc21_utf8(), encoding="iso-8859-1")
    assert item.encoding == "iso-8859-1"
    assert title_a(item) == "红楼梦 /".encode().decode("latin-1")


def test_forcing_the_format_overrides_the_dialect() -> None:
    assert {i.dialect for i in read(mc.marc21_utf8(), format=Format.UNIMARC)} == {"unimarc"}
    assert {i.dialect for i in read(mc.unimarc("utf-8"), format="marc21")} == {"marc21"}
    with pytest.raises(ValueError):
        read(b"", format="pdf")


def test_undecodable_unimarc_reports_the_declared_charset_and_the_field() -> None:
    spec = mc._replace_field(mc.unimarc_spec(mc.SANTI, "50"), "200", ("200", "1 ", [("a", b"\xff\xff bad")]))
    (item,) = read(mc.iso2709(spec))
    assert isinstance(item, Rejection)
    assert item.reason.startswith("field 200: ") and "not valid utf-8" in item.reason
    assert "utf-8, gb18030" in item.reason
    assert item.control_number == "TC0000002"


def test_marc21_utf8_mislabelled_as_marc8_is_read_as_utf8() -> None:
    spec = mc.marc21_spec(mc.CIEN_ANOS)
    mislabelled = mc.MarcSpec(mc.LEADER_MARC8, spec.fields)  # leader/09 blank, bytes UTF-8
    (item,) = read(mc.iso2709(mislabelled))
    assert item.encoding == "utf-8"
    assert title_a(item) == "Cien años de soledad /"


# --------------------------------------------------------------------------- MARC-8


def test_marc8_encoder_puts_combining_marks_before_the_base_letter_and_cjk_behind_esc_1() -> None:
    assert mc.marc8_encode("años") == b"a\xe4nos"  # ANSEL tilde, then n
    assert mc.marc8_encode("García Márquez") == b"Garc\xe2ia M\xe2arquez"
    assert mc.marc8_encode("红楼梦 /") == b"\x1b$1\x27\x50\x72\x27\x45\x4a\x27\x39\x24\x1b(B /"
    assert b"\x1b$1" in mc.marc21_marc8()


@pytest.mark.parametrize(
    "text", ["红楼梦", "Cien años de soledad", "García Márquez, Gabriel", "西游记 / 吴承恩著.", "Ł ø ß ©"]
)
def test_marc8_round_trip_through_pymarc_decoder(text: str) -> None:
    assert marc.marc8_decode(mc.marc8_encode(text)) == text


@pytest.mark.parametrize(
    "bad",
    [b"\x1b$1\x7f\x7f\x7f", b"\x1b$1\x21\x30", b"abc\x80", b"\x1b(", b"ok \xff"],
)
def test_marc8_decoder_rejects_unmappable_bytes(bad: bytes) -> None:
    with pytest.raises(UnicodeDecodeError):
        marc.marc8_decode(bad)


def test_undecodable_marc8_record_is_rejected_naming_the_field() -> None:
    a, _b, c = (mc.iso2709(mc.marc21_spec(bk, marc8=True), "marc-8") for bk in mc.MARC21_BOOKS)
    spec = mc._replace_field(
        mc.marc21_spec(mc.SANTI, marc8=True), "245", ("245", "10", [("a", b"\x1b$1\x7f\x7f\x7f\x1b(B /")])
    )
    items = list(read(a + mc.iso2709(spec, "marc-8") + c))
    assert [type(i) for i in items] == [RawRecord, Rejection, RawRecord]
    assert items[1].reason.startswith("field 245: ") and "marc-8" in items[1].reason
    assert items[1].control_number == "TC0000002"


# --------------------------------------------------------------------------- broken ISO 2709

A, B, C = mc.good_records()


def shape(items: list) -> list[tuple[str, int, int, str | None]]:
    """(kind, position, offset, 001 or None) per item."""
    out = []
    for i in items:
        if isinstance(i, RawRecord):
            out.append(("record", i.position, i.offset, i.record["001"].data))
        else:
            out.append(("rejected", i.position, i.offset, i.control_number))
    return out


@pytest.mark.parametrize(
    ("kind", "expected", "reason"),
    [
        (
            "truncated_tail",
            [
                ("record", 0, 0, "TC0000001"),
                ("record", 1, len(A), "TC0000002"),
                ("rejected", 2, len(A) + len(B), "TC0000003"),
            ],
            "truncated record: the leader declares",
        ),
        (
            "truncated_middle",
            [
                ("record", 0, 0, "TC0000001"),
                ("rejected", 1, len(A), "TC0000002"),
                ("record", 2, len(A) + len(B) // 2, "TC0000003"),
            ],
            "truncated record: the leader declares",
        ),
        (
            "wrong_length_long",
            [
                ("record", 0, 0, "TC0000001"),
                ("rejected", 1, len(A), "TC0000002"),
                ("record", 2, len(A) + len(B), "TC0000003"),
            ],
            f"wrong record length: the leader declares {len(B) + 40} bytes",
        ),
        (
            "wrong_length_short",
            [
                ("record", 0, 0, "TC0000001"),
                ("rejected", 1, len(A), "TC0000002"),
                ("record", 2, len(A) + len(B), "TC0000003"),
            ],
            f"wrong record length: the leader declares {len(B) - 40} bytes",
        ),
        (
            "nonnumeric_length",
            [
                ("record", 0, 0, "TC0000001"),
                ("rejected", 1, len(A), "TC0000002"),
                ("record", 2, len(A) + len(B), "TC0000003"),
            ],
            "record length '00a12' is not numeric",
        ),
        (
            "zero_length",
            [
                ("record", 0, 0, "TC0000001"),
                ("rejected", 1, len(A), "TC0000002"),
                ("record", 2, len(A) + len(B), "TC0000003"),
            ],
            "00000",
        ),
        (
            "past_end",
            [
                ("record", 0, 0, "TC0000001"),
                ("rejected", 1, len(A), "TC0000002"),
                ("record", 2, len(A) + len(B), "TC0000003"),
            ],
            "directory entry for field 245 points past the end of the record",
        ),
        (
            "zero_byte",
            [("record", 0, 0, "TC0000001"), ("rejected", 1, len(A), None), ("record", 2, len(A) + 1, "TC0000003")],
            "empty record",
        ),
        (
            "random_bytes",
            [("record", 0, 0, "TC0000001"), ("rejected", 1, len(A), None), ("record", 2, len(A) + 3000, "TC0000003")],
            "unparseable data (3000 bytes)",
        ),
    ],
)
def test_broken_record_is_reported_and_the_records_around_it_survive(
    kind: str, expected: list[tuple[str, int, int, str | None]], reason: str
) -> None:
    items = list(read(mc.broken(kind)))
    assert shape(items) == expected
    (rejection,) = [i for i in items if isinstance(i, Rejection)]
    assert reason in rejection.reason
    # the good records are whole
    titles = dict(zip(("TC0000001", "TC0000002", "TC0000003"), TITLES_MARC21, strict=False))
    assert [title_a(i) for i in records(items)] == [titles[e[3]] for e in expected if e[0] == "record"]


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("bad_indicators", "field 245: invalid indicators"), ("undecodable", "field 245: bytes [ff fe")],
)
def test_bad_field_rejects_its_record_only(kind: str, reason: str) -> None:
    data = mc.broken(kind)
    items = list(read(data))
    assert shape(items) == [
        ("record", 0, 0, "TC0000001"),
        ("rejected", 1, len(A), "TC0000002"),
        ("record", 2, len(data) - len(C), "TC0000003"),
    ]
    assert items[1].reason.startswith(reason)
    if kind == "undecodable":
        assert "utf-8" in items[1].reason


def test_a_99999_byte_record_with_a_9999_byte_field_is_accepted() -> None:
    items = list(read(mc.broken("big")))
    assert shape(items) == [
        ("record", 0, 0, "TC0000001"),
        ("record", 1, len(A), "TCBIG0001"),
        ("record", 2, len(A) + 99_999, "TC0000003"),
    ]
    big = items[1].record
    assert len(big.as_marc()) == 99_999
    assert max(len(f["a"]) for f in big.get_fields("505")) == 9_999 - 5


def test_random_bytes_alone_are_one_rejection() -> None:
    (item,) = read(mc.broken("random_only"))
    assert isinstance(item, Rejection)
    assert (item.position, item.offset) == (0, 0)
    assert item.reason == "unparseable data (65536 bytes): no record found"


def test_an_empty_file_has_no_records(tmp_path: Path) -> None:
    path = tmp_path / "empty.mrc"
    path.write_bytes(b"")
    assert list(read(path)) == []
    assert list(read(io.BytesIO(b"\n\n"))) == []
    assert list(read(b"")) == []


def test_megabytes_of_junk_without_terminator_stay_one_rejection_in_bounded_memory() -> None:
    junk = random.Random(5).randbytes(3_000_000).replace(b"\x1d", b"\x00")
    items = list(read(A + junk + B + C))
    assert shape(items) == [
        ("record", 0, 0, "TC0000001"),
        ("rejected", 1, len(A), None),
        ("record", 2, len(A) + len(junk), "TC0000002"),
        ("record", 3, len(A) + len(junk) + len(B), "TC0000003"),
    ]
    assert items[1].reason == "unparseable data (3000000 bytes): no record found"


def test_separators_between_records_are_tolerated() -> None:
    items = list(read(A + b"\r\n" + B + b"\n\x1a"))
    assert [(type(i), i.offset) for i in items] == [(RawRecord, 0), (RawRecord, len(A) + 2)]
    items = list(read(b"\xef\xbb\xbf" + A))  # a byte-order mark before binary MARC
    assert [(type(i), i.offset) for i in items] == [(RawRecord, 3)]


def test_inputs_paths_file_objects_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "x.mrc"
    path.write_bytes(A + B)
    assert len(list(read(path))) == len(list(read(str(path)))) == len(list(read(io.BytesIO(A + B)))) == 2
    with pytest.raises(TypeError):
        list(read(io.StringIO("00100nam")))
    with pytest.raises(FileNotFoundError):
        read(tmp_path / "missing.mrc")


def test_rejections_carry_the_library() -> None:
    items = list(read(mc.broken("zero_byte"), library="CQ"))
    assert {i.library for i in items} == {"CQ"}


# --------------------------------------------------------------------------- MARCXML and MARC-in-JSON


def test_marcxml_bad_records_are_rejected_and_reading_goes_on() -> None:
    xml = mc.marc21_xml().decode()
    xml = xml.replace("<leader>", "<leaderX>", 1).replace("</leader>", "</leaderX>", 1)  # record 0: no leader
    cut = xml.index("TC0000002")  # record 1: bad indicators
    xml = xml[:cut] + xml[cut:].replace('ind1="1" ind2="0"', 'ind1="11" ind2="0"', 1)
    items = list(read(xml.encode()))
    kinds = [type(i).__name__ for i in items]
    assert kinds.count("Rejection") == 2 and kinds.count("RawRecord") == 3
    assert items[0].reason == "record has no leader" and items[0].control_number == "TC0000001"
    assert "invalid indicators" in [i for i in items if isinstance(i, Rejection)][1].reason
    assert [i.position for i in items] == [0, 1, 2, 3, 4]


def test_marcxml_that_stops_being_well_formed_ends_with_one_rejection() -> None:
    xml = mc.marc21_xml()
    cut = xml[: xml.index(b"<record", xml.index(b"TC0000003")) - 300]
    items = list(read(cut))
    assert [type(i) for i in items] == [RawRecord, RawRecord, Rejection]
    assert "not well-formed" in items[-1].reason


def test_marcxml_refuses_entity_declarations() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE c [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        b"<collection><record><leader>00000nam a2200000 i 4500</leader></record></collection>"
    )
    items = list(read(bomb, format=Format.MARCXML))
    assert [type(i) for i in items] == [Rejection]
    assert "entity" in items[0].reason


def test_marcxml_in_gbk_is_transcoded() -> None:
    xml = mc.marcxml([mc.marc21_spec(mc.SANTI)]).decode().replace('encoding="UTF-8"', 'encoding="GBK"')
    (item,) = read(xml.encode("gbk"))
    assert title_a(item) == "三体 /"
    assert item.encoding == "gbk"


def test_marc_in_json_bad_lines_are_rejected_and_reading_goes_on() -> None:
    lines = mc.marc21_ndjson().decode().splitlines()
    lines[1] = lines[1][:50]  # cut short: malformed JSON
    lines[2] = lines[2].replace('"leader"', '"lead"')  # no leader
    data = "\n".join([*lines, "[1, 2]", ""]).encode()
    items = list(read(data))
    assert [type(i).__name__ for i in items] == [
        "RawRecord",
        "Rejection",
        "Rejection",
        "RawRecord",
        "Rejection",
        "Rejection",
    ]
    assert "malformed JSON" in items[1].reason
    assert items[2].reason.startswith("missing or malformed leader") and items[2].control_number == "TC0000003"
    assert "not a MARC-in-JSON object" in items[4].reason
    assert [i.position for i in items] == list(range(6))


def test_iter_json_values_streams_across_block_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(marc, "BLOCK", 7)
    data = '[{"a": "红楼梦"}, {"b": [1, 2, {"c": "三体"}]},\n {"d": null}]'.encode()
    values = list(marc.iter_json_values(io.BytesIO(data)))
    assert [v for _, v in values] == [{"a": "红楼梦"}, {"b": [1, 2, {"c": "三体"}]}, {"d": None}]
    assert [data[o : o + 1] for o, _ in values] == [b"{", b"{", b"{"]


# --------------------------------------------------------------------------- memory


def test_streaming_50_mb_keeps_memory_flat(tmp_path: Path) -> None:
    path = tmp_path / "big.mrc"
    size = mc.write_generated(path, 5_200, note_bytes=9_000)  # ~50 MB
    assert size > 48_000_000
    tracemalloc.start()
    try:
        count = sum(1 for item in read(path) if isinstance(item, RawRecord))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 5_200
    assert peak < 30 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
