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
