"""Our profile checks on top of fhir.resources: what the models leave unchecked is refused, by expression."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from health.fhir.profile import check
from tests.fixtures import fhir as fx

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
FIXTURES = sorted(p.stem for p in Path(fx.HERE).glob("*.json"))


def problems(resource: Any) -> dict[str, str]:
    _, found = check(resource, now=NOW)
    return {p.path: p.message for p in found}


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_passes(name: str) -> None:
    model, found = check(fx.load(name), now=NOW)
    assert found == [] and model is not None


def test_a_patient_passes() -> None:
    assert problems(fx.patient(number=fx.id_number(), ss_card="CQ0000001", mrn="M1")) == {}


def changed(name: str, **values: Any) -> dict[str, Any]:
    r = copy.deepcopy(fx.load(name))
    for k, v in values.items():
        if v is None:
            r.pop(k, None)
        else:
            r[k] = v
    return r


@pytest.mark.parametrize(
    ("name", "values", "path", "words"),
    [
        ("observation-string", {"status": "bogus"}, "status", "status must be one of"),
        ("observation-string", {"status": None}, "status", "required"),
        ("diagnosticreport-lab", {"status": "done"}, "status", "status must be one of"),
        ("imagingstudy", {"status": "final"}, "status", "status must be one of"),
        ("specimen", {"status": "kept"}, "status", "status must be one of"),
        ("observation-string", {"code": {"text": "colour"}}, "code.coding", "system and a code"),
        ("diagnosticreport-lab", {"code": None}, "code", "required"),
        ("observation-string", {"subject": None}, "subject", "patient"),
        ("imagingstudy", {"subject": {"display": "someone"}}, "subject", "patient"),
        ("diagnosticreport-lab", {"issued": None}, "issued", "issued"),
        ("observation-string", {"effectiveDateTime": "2031-01-01T00:00:00+08:00"}, "effectiveDateTime", "future"),
        ("observation-string", {"issued": "2031-01-01T00:00:00+08:00"}, "issued", "future"),
        ("observation-string", {"effectiveDateTime": "2024-13-45"}, "effectiveDateTime", "regex"),
        ("observation-string", {"colour": "yellow"}, "colour", "unknown element"),
        ("practitioner", {"gender": "m"}, "gender", "gender must be one of"),
    ],
)
def test_refusals_name_the_field(name: str, values: dict[str, Any], path: str, words: str) -> None:
    found = problems(changed(name, **values))
    assert path in found, found
    assert words in found[path]


# the ends of Python's calendar: a moment that has no UTC equivalent, or is too old to be a result
EXTREMES = ["0001-01-01T00:00:00+14:00", "0001-01-01", "9999-12-31T23:59:59-12:00", "1899-12-31T23:00:00+08:00"]


@pytest.mark.parametrize("value", EXTREMES)
@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("observation-string", "effectiveDateTime"),
        ("observation-string", "issued"),
        ("diagnosticreport-lab", "issued"),
        ("imagingstudy", "started"),
        ("patient", "meta.lastUpdated"),
    ],
)
def test_dates_at_the_ends_of_the_calendar_are_refused_by_name(name: str, path: str, value: str) -> None:
    if path == "issued" and len(value) == 10:
        value = "0001-01-01T00:00:00Z"  # an instant: the model refuses a bare date there
    r = fx.patient() if name == "patient" else fx.load(name)
    if path == "meta.lastUpdated":
        r["meta"] = {"lastUpdated": value if len(value) > 10 else "0001-01-01T00:00:00Z"}
    else:
        r[path] = value
    found = problems(r)
    assert path in found, found
    assert "before 1900" in found[path] or "no UTC equivalent" in found[path] or "future" in found[path]


def test_period_ends_and_the_earliest_accepted_dates() -> None:
    obs = changed("observation-period")
    obs["effectivePeriod"] = {"start": "2024-03-01T08:00:00+08:00", "end": "9999-12-31T23:59:59-12:00"}
    assert "no UTC equivalent" in problems(obs)["effectivePeriod.end"]
    obs["effectivePeriod"] = {"start": "0001-01-01", "end": "2024-03-01"}
    assert "before 1900" in problems(obs)["effectivePeriod.start"]
    # 1900 itself is taken, even when its first hour in China time is still 1899 in UTC
    assert problems(changed("observation-string", effectiveDateTime="1900-01-01")) == {}
    assert problems(changed("observation-string", issued="1900-01-01T00:00:00+14:00")) == {}


def test_to_utc_never_raises_at_the_ends_of_the_calendar() -> None:
    from health.fhir.profile import to_utc

    for value in [*EXTREMES, "9999-12-31", "0001", "9999-12", "0001-01-01T00:00:00", None, 3, "x" * 12]:
        moment = to_utc(value)
        assert moment is None or moment.utcoffset() == dt.timedelta(0)
    assert to_utc("2024-03-01") == dt.datetime(2024, 2, 29, 16, tzinfo=dt.UTC)


def test_nested_paths_and_value_sets() -> None:
    bp = fx.load("observation-components")
    bp["component"][1]["valueQuantity"]["comparator"] = "~"
    bp["component"][0]["code"] = {"coding": [{"display": "no code"}]}
    found = problems(bp)
    assert "component[1].valueQuantity.comparator" in found
    assert "component[0].code.coding" in found
    glu = fx.load("observation-quantity")
    glu["referenceRange"][0]["low"]["value"] = "low"
    assert "referenceRange[0].low.value" in problems(glu)
    ct = fx.load("imagingstudy")
    ct["series"][0]["modality"] = {"system": "http://dicom.nema.org/resources/ontology/DCM"}
    assert "series[0].modality.code" in problems(ct)


def test_two_values_at_once_are_refused() -> None:
    both = changed("observation-string", valueBoolean=True)
    _, found = check(both, now=NOW)
    assert found and "multiple" in found[0].message


def test_what_we_do_not_take() -> None:
    assert "resourceType" in problems({"resourceType": "Encounter", "status": "finished"})
    assert "resourceType" in problems({"status": "final"})
    assert problems([1, 2]) == {"": "the resource must be a JSON object"}


def test_errors_never_echo_the_input() -> None:
    number = fx.id_number()
    bad = changed("observation-string", effectiveDateTime=number)
    _, found = check(bad, now=NOW)
    assert found and all(number not in p.message for p in found)


def test_nesting_too_deep_is_a_problem_not_a_crash() -> None:
    ext: dict[str, Any] = {"url": "http://example.org/x", "valueString": "a"}
    for _ in range(3000):
        ext = {"url": "http://example.org/x", "extension": [ext]}
    deep = changed("observation-string", extension=[ext])
    model, found = check(deep, now=NOW)
    assert model is None and found[0].message == "the resource is nested too deeply"


def _same(a: Any, b: Any) -> bool:
    """JSON equality, with instants compared as moments (the model drops a zero fraction of a second)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, str) and isinstance(b, str) and "T" in a and a[:4].isdigit():
        return dt.datetime.fromisoformat(a) == dt.datetime.fromisoformat(b)
    return a == b


@pytest.mark.parametrize("name", FIXTURES)
def test_the_stored_copy_holds_what_model_dump_holds(name: str) -> None:
    """The ingest stores the validated JSON rather than paying for model_dump: for valid FHIR they agree."""
    from health.fhir.ingest import _copy

    resource = fx.load(name)
    model, _ = check(resource, now=NOW)
    assert _same(_copy(resource, None, []), model.model_dump(mode="json", exclude_none=True))


@pytest.mark.parametrize(
    "stored",
    [
        (None, "0001-01-01T00:00:00+14:00"),
        (None, "9999-12-31T23:59:59-12:00"),
        (None, "not a date"),
        ("²", 20240301),
        ("1", None),
        (7, ["2024"]),
    ],
)
def test_older_takes_whatever_a_stored_body_holds(stored: tuple[Any, Any]) -> None:
    from health.fhir.ingest import _older

    assert _older(("2", "2024-03-01T08:00:00+08:00"), stored) is False
    assert _older((None, None), stored) is False


def test_older_still_orders_what_it_can() -> None:
    from health.fhir.ingest import _older

    assert _older(("1", None), ("2", None)) is True
    assert _older((None, "2024-03-01T08:00:00+08:00"), (None, "2024-03-02")) is True
    assert _older((None, "2024-03-02"), (None, "0001-01-01T00:00:00+14:00")) is False


def test_a_logical_reference_keeps_no_identifier_in_clear() -> None:
    from health.fhir.ingest import _copy

    number = fx.id_number()
    obs = changed(
        "observation-string",
        subject={
            "reference": "Patient/pat1",
            "identifier": {"system": "https://twincity.example/fhir/sid/social-security-card", "value": "CQ0000001"},
        },
        performer=[{"identifier": {"system": "urn:oid:2.16.156.10011.1.3", "value": number}, "display": "王医生"}],
    )
    refs: list[Any] = []
    body = _copy(obs, None, refs)
    assert body["subject"]["identifier"]["value"] == "*****0001"
    assert body["subject"]["identifier"]["system"].endswith("social-security-card")
    assert number not in str(body) and "CQ0000001" not in str(body)
    assert [r[1] for r in refs] == ["subject"]
    assert obs["subject"]["identifier"]["value"] == "CQ0000001"  # the resource as sent is left alone


def test_a_stored_patient_keeps_no_contact_data() -> None:
    from health.fhir.ingest import _copy, _mask_patient

    p = fx.patient(number=fx.id_number(), ss_card="CQ0000001")
    p["address"] = [
        {"use": "home", "line": ["解放碑街道 12 号 3-1"], "city": "重庆", "district": "渝中区", "postalCode": "400010"},
        {"text": "某小区 5 栋"},
    ]
    p["contact"] = [{"name": {"text": "李娜"}, "telecom": [{"system": "phone", "value": "13900001111"}]}]
    p["text"] = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">13800230001</div>'}
    body = _copy(p, None, [])
    _mask_patient(body)
    assert body["address"] == [{"city": "重庆", "district": "渝中区"}]
    assert not {"telecom", "contact", "text"} & set(body)
    for needle in ("13800230001", "13900001111", "解放碑", "400010", "某小区", "CQ0000001", "李娜"):
        assert needle not in str(body), needle
    no_address = fx.patient()
    no_address["address"] = [{"line": ["1 号"]}]
    _mask_patient(no_address)
    assert "address" not in no_address
