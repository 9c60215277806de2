"""JSON columns are written with orjson and read with orjson; each value reads back as the standard library's
text of it would (the columns held that text before)."""

import dataclasses
import datetime as dt
import json
import math

import pytest

from federation.db import JSONText, json_dumps, json_loads

VALUES = [
    {"resourceType": "Observation", "valueQuantity": {"value": 5.6, "unit": "mmol/L"}, "note": [{"text": "空腹血糖"}]},
    {"big": 2**70, "negative": -(2**64), "small": 1e-300, "e": 1e16},
    {"nan": math.nan, "inf": math.inf, "ninf": -math.inf},
    {"none": None, "nested": [None, {"a": None}], "text": "null and void"},
    {"none": None, "deep": [{"values": [1.5, None, ("x", math.nan)]}]},
    {"none": None, math.nan: "a NaN key"},
    {1: "int key", 2.5: "float key", False: "bool key", None: "none key"},
    ["tuple", ("a", 1)],
    "\ud800 a lone surrogate",
    "\u2028 line separator, 😀 astral",
    12345678901234567890,
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_a_value_reads_back_as_the_standard_librarys_text_of_it_would(value):
    expected = json.loads(json.dumps(value))
    got = json_loads(json_dumps(value))
    if isinstance(expected, dict) and any(isinstance(v, float) and math.isnan(v) for v in expected.values()):
        assert math.isnan(got["nan"]) and got["inf"] == math.inf and got["ninf"] == -math.inf
    elif isinstance(value, dict) and "deep" in value:
        assert math.isnan(got["deep"][0]["values"][2][1]) and got["deep"][0]["values"][:2] == [1.5, None]
    else:
        assert got == expected
    assert json_dumps(value) == json.dumps(value) or "NaN" not in json.dumps(value)


def test_a_value_with_nulls_but_no_nan_is_written_by_orjson():
    """Most JSON values hold a None somewhere (a catalogue record's empty fields); they need no second encoding."""
    value = {"title": "红楼梦", "subtitle": None, "names": [{"name": "曹雪芹", "role": None}], "year": 1791}
    assert json_dumps(value) == '{"title":"红楼梦","subtitle":null,"names":[{"name":"曹雪芹","role":null}],"year":1791}'


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize("value", [{"at": dt.datetime(2026, 1, 1)}, {"d": dt.date(2026, 1, 1)}, Point(1), {1, 2}])
def test_what_the_standard_library_refuses_is_still_refused(value):
    with pytest.raises(TypeError):
        json.dumps(value)
    with pytest.raises(TypeError):
        json_dumps(value)


def test_text_serialised_already_is_written_as_it_is():
    text = json.dumps({"b": [1, None], "a": "红楼梦"}, sort_keys=True, ensure_ascii=False)
    written = json_dumps(JSONText(text))
    assert written == text and type(written) is str
    assert json_loads(written) == {"a": "红楼梦", "b": [1, None]}
    assert json_loads(json_dumps(text)) == text  # a plain str is a JSON string value, as before
