"""FHIR search parameters parsed at the edge: dates with prefixes and partial precision, tokens, references, sort,
count and the opaque keyset cursor. Bad input is a SearchError (400) saying what to send instead."""

from __future__ import annotations

import datetime as dt

import pytest

from health.fhir.search import (
    Cursor,
    SearchError,
    Token,
    parse_count,
    parse_date,
    parse_lastn,
    parse_reference,
    parse_search,
    parse_sort,
    parse_tokens,
    split_values,
)

UTC = dt.UTC


def utc(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "prefix", "lo", "hi"),
    [
        # a date without a zone is China Standard Time (+08:00): the day starts at 16:00 UTC the day before
        ("2024", "eq", utc(2023, 12, 31, 16), utc(2024, 12, 31, 16)),
        ("2024-03", "eq", utc(2024, 2, 29, 16), utc(2024, 3, 31, 16)),
        ("2024-12", "eq", utc(2024, 11, 30, 16), utc(2024, 12, 31, 16)),
        ("ge2024-03-05", "ge", utc(2024, 3, 4, 16), utc(2024, 3, 5, 16)),
        ("lt2024-03-05T10:00:00Z", "lt", utc(2024, 3, 5, 10), utc(2024, 3, 5, 10, 0, 1)),
        ("gt2024-03-05T10:00+08:00", "gt", utc(2024, 3, 5, 2), utc(2024, 3, 5, 2, 1)),
        ("le2024-03-05T10:00:00.5Z", "le", utc(2024, 3, 5, 10, 0, 0, 500000), utc(2024, 3, 5, 10, 0, 0, 600000)),
        # '+' decoded to a space by a query string that was not percent-encoded
        ("eq2024-03-05T10:00:00 08:00", "eq", utc(2024, 3, 5, 2), utc(2024, 3, 5, 2, 0, 1)),
        ("2024-03-05T10:00:00-05:00", "eq", utc(2024, 3, 5, 15), utc(2024, 3, 5, 15, 0, 1)),
    ],
)
def test_dates_cover_their_precision(raw, prefix, lo, hi):
    bound = parse_date(raw)
    assert (bound.prefix, bound.lo, bound.hi) == (prefix, lo, hi)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "2024-13",
        "2024-02-30",
        "24-03-05",
        "2024-03-05T25:00",
        "sa2024",
        "ne2024",
        "2024-03-05T10:00+15:00",
        "x",
        "0000",
        "0001-01-01",  # before the first instant a timestamp can hold, once in UTC
        "9999-12-31T23:00-05:00",
    ],
)
def test_bad_dates_are_refused_with_a_reason(raw):
    with pytest.raises(SearchError) as e:
        parse_date(raw)
    assert e.value.status == 400
    assert e.value.detail


def test_date_prefixes_compare_against_the_whole_range():
    from sqlalchemy import column
    from sqlalchemy.dialects import sqlite

    col = column("t")

    def sql(raw: str) -> str:
        return str(parse_date(raw).clause(col).compile(dialect=sqlite.dialect()))

    assert sql("gt2024") == "t >= ?"  # after the whole year
    assert sql("le2024") == "t < ?"  # anywhere up to its end
    assert "AND" in sql("2024")
    b = parse_date("gt2024")
    assert b.hi == utc(2024, 12, 31, 16)


def test_tokens():
    assert parse_tokens("http://loinc.org|2345-7") == [Token("http://loinc.org", "2345-7")]
    assert parse_tokens("2345-7") == [Token(None, "2345-7")]
    assert parse_tokens("|x") == [Token("", "x")]
    assert parse_tokens("http://loinc.org|") == [Token("http://loinc.org", None)]
    assert parse_tokens("a|1,b|2") == [Token("a", "1"), Token("b", "2")]
    assert split_values(r"a\,b,c") == ["a,b", "c"]
    with pytest.raises(SearchError):
        parse_tokens("|")
    with pytest.raises(SearchError):
        parse_tokens(",".join(["x"] * 51))


@pytest.mark.parametrize(
    "raw",
    ["abc123", "Patient/abc123", "https://fhir.example/fhir/Patient/abc123", "http://x/Patient/abc123"],
)
def test_patient_references(raw):
    assert parse_reference(raw) == "abc123"


@pytest.mark.parametrize("raw", ["Observation/abc", "a,b", "Patient/", "Patient/a b", "../../etc", "x" * 65])
def test_bad_references(raw):
    with pytest.raises(SearchError):
        parse_reference(raw)


def test_sort_and_count():
    assert parse_sort("-date").param == "-date"
    assert parse_sort("_lastUpdated").descending is False
    for bad in ("name", "date,-_lastUpdated", "--date"):
        with pytest.raises(SearchError):
            parse_sort(bad)
    assert parse_count("0") == 0
    for bad in ("-1", "501", "ten", "1.5"):
        with pytest.raises(SearchError):
            parse_count(bad)


def test_cursor_round_trip_and_tampering():
    c = Cursor("date", True, utc(2024, 3, 5, 2, 0, 0, 123), "0" * 32)
    assert Cursor.decode(c.encode()) == c
    n = Cursor("_lastUpdated", False, None, "abc", backward=True)
    assert Cursor.decode(n.encode()) == n
    assert "=" not in c.encode()
    for bad in ("", "!!!", "e30", c.encode()[:-3], "eyJrIjoibmFtZSJ9"):
        with pytest.raises(SearchError):
            Cursor.decode(bad)


def test_a_search_parses_into_one_plan():
    sp = parse_search(
        "DiagnosticReport",
        {
            "subject": ["Patient/p1"],
            "code": ["http://loinc.org|24323-8"],
            "date": ["ge2024-01-01", "lt2025"],
            "_include": ["DiagnosticReport:result"],
            "_revinclude": ["Provenance:target"],
            "_sort": ["_lastUpdated"],
            "_count": ["10"],
        },
    )
    assert sp.patient == "p1"
    assert sp.include_results and sp.revinclude_provenance
    assert len(sp.dates) == 2
    assert sp.count == 10 and sp.sort.param == "_lastUpdated"
    assert ("patient", "p1") in sp.echo and ("_count", "10") in sp.echo


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"identifier": ["x|y"]}, "POST /fhir/Patient/_search"),
        ({"name": ["x"]}, "does not support"),
        ({"patient": ["a"], "subject": ["b"]}, "different patients"),
        ({"_include": ["Observation:subject"]}, "_include"),
        ({"_revinclude": ["AuditEvent:entity"]}, "_revinclude"),
        ({"_format": ["xml"]}, "JSON"),
        ({"_sort": ["date"], "_cursor": [Cursor("date", True, None, "x").encode()]}, "another sort order"),
        ({"_count": ["1", "2"]}, "once"),
        ({"code": ["a", "b"]}, "once"),
    ],
)
def test_bad_searches_say_what_to_do(params, needle):
    rtype = "DiagnosticReport" if "_include" in params else "Observation"
    with pytest.raises(SearchError) as e:
        parse_search(rtype, params)
    assert needle in e.value.detail


def test_include_is_only_for_reports():
    with pytest.raises(SearchError):
        parse_search("Observation", {"_include": ["DiagnosticReport:result"]})


def test_lastn():
    spec = parse_lastn({"patient": ["p"], "code": ["http://loinc.org|2345-7,4548-4"], "max": ["3"]})
    assert spec.max == 3 and len(spec.codes) == 2
    assert parse_lastn({}).max == 1
    for bad in ({"max": ["0"]}, {"max": ["101"]}, {"_count": ["5"]}):
        with pytest.raises(SearchError):
            parse_lastn(bad)


def test_the_verdict_replaces_ours_and_keeps_the_senders_own_tags_and_extensions():
    from types import SimpleNamespace

    from health.fhir.search import RECOGNITION_SYSTEM, VERDICT_URL, with_verdict

    theirs_tag = {"system": "urn:hospital:tags", "code": "urgent"}
    theirs_ext = {"url": "urn:hospital:ext", "valueString": "x"}
    body = {
        "resourceType": "Observation",
        "id": "o1",
        "meta": {"versionId": "3", "tag": [theirs_tag, {"system": RECOGNITION_SYSTEM, "code": "HR"}]},
        "extension": [theirs_ext, {"url": VERDICT_URL, "extension": []}],
    }
    verdict = SimpleNamespace(
        recognised=False, reasons=("expired", "not_final"), item_code="LAB-GLU", valid_until=dt.date(2025, 1, 31)
    )
    out = with_verdict(body, verdict)
    assert out["meta"]["versionId"] == "3"
    assert out["meta"]["tag"] == [
        theirs_tag,
        {"system": RECOGNITION_SYSTEM, "code": "not-recognised", "display": "not recognised"},
    ]
    assert out["extension"][0] == theirs_ext
    assert out["extension"][1] == {
        "url": VERDICT_URL,
        "extension": [
            {"url": "recognised", "valueBoolean": False},
            {"url": "reason", "valueCode": "expired"},
            {"url": "reason", "valueCode": "not_final"},
            {"url": "item", "valueString": "LAB-GLU"},
            {"url": "validUntil", "valueDate": "2025-01-31"},
        ],
    }
    assert body["meta"]["tag"][1]["code"] == "HR"  # the stored body is not changed
    bare = with_verdict({"resourceType": "Provenance", "id": "p"}, None)
    assert bare == {"resourceType": "Provenance", "id": "p"}
