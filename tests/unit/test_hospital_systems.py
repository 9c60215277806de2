"""The hospital pull's pure parts: where the watermark may move after a page, duplicates, the stored watermark,
and next links that would take the credentials elsewhere."""

from __future__ import annotations

import datetime as dt

import pytest

from connectors.framework.config import ConnectorConfig
from connectors.framework.errors import BadResponse, InvalidConnector
from connectors.hospital_systems import service
from connectors.hospital_systems.adapter import HttpHospitalFhir
from connectors.hospital_systems.port import Changed
from connectors.hospital_systems.schemas import SearchSet

T0 = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def at(seconds: int, rid: str = "x") -> Changed:
    return Changed("Observation", rid, T0 + dt.timedelta(seconds=seconds), {"id": rid})


def test_the_last_page_moves_the_watermark_to_its_greatest_instant_whatever_the_order():
    page = [at(3, "c"), at(1, "a"), at(2, "b")]
    assert service.next_mark(None, page, more=False) == T0 + dt.timedelta(seconds=3)


def test_mid_list_the_watermark_stops_below_the_greatest_instant_which_may_continue_on_the_next_page():
    page = [at(1, "a"), at(2, "b"), at(2, "c")]
    assert service.next_mark(None, page, more=True) == T0 + dt.timedelta(seconds=1)
    assert service.next_mark(None, [at(2, "b"), at(2, "c")], more=True) is None  # one instant: no move
    later = T0 + dt.timedelta(seconds=5)
    assert service.next_mark(later, page, more=False) == later  # never backwards


def test_a_repeated_resource_is_stored_once_at_its_latest_version():
    unique = service.latest([at(1, "a"), at(3, "a"), at(2, "b"), at(2, "b")])
    assert [(r.id, r.updated.second) for r in unique] == [("b", 2), ("a", 3)]


def test_the_watermark_round_trips_in_utc_and_types_are_pulled_referenced_first():
    marks = {"Observation": T0, "Patient": T0.astimezone(dt.timezone(dt.timedelta(hours=8)))}
    raw = service.dump_marks(marks)
    assert raw == '{"Patient":"2026-06-01T00:00:00.000Z","Observation":"2026-06-01T00:00:00.000Z"}'
    assert service.parse_marks(raw) == {"Patient": T0, "Observation": T0}
    assert service.resource_types({"resource_types": ["DiagnosticReport", "Patient"]}) == [
        "Patient",
        "DiagnosticReport",
    ]
    with pytest.raises(InvalidConnector):
        service.parse_marks("42")
    with pytest.raises(InvalidConnector):
        service.resource_types({"resource_types": "Patient"})


def test_a_refusal_holds_the_watermark_below_it_and_is_given_up_only_after_the_retries():
    page = [at(1, "a"), at(2, "b"), at(2, "c"), at(3, "d"), at(4, "e")]
    start = T0
    hold, passed = service.hold_for(start, 0, start, page, [at(3, "d")], retries=2)
    assert (hold, passed) == (service.Hold(T0 + dt.timedelta(seconds=2), 1), [])  # every resource below it stored
    # held at the run's starting instant: one more run each time, until the retries are spent
    hold, passed = service.hold_for(start, 1, start, [at(3, "d"), at(4, "e")], [at(3, "d")], retries=2)
    assert (hold, passed) == (service.Hold(start, 2), [])
    hold, passed = service.hold_for(start, 2, start, [at(3, "d"), at(4, "e")], [at(3, "d")], retries=2)
    assert hold is None and [r.id for r in passed] == ["d"]
    # given up at one instant, the next refusal of the page starts its own count
    hold, passed = service.hold_for(start, 2, start, [at(3, "d"), at(4, "e")], [at(4, "e"), at(3, "d")], retries=2)
    assert hold == service.Hold(T0 + dt.timedelta(seconds=3), 1) and [r.id for r in passed] == ["d"]
    # a type with no instant yet is held at none; no retries passes everything at once
    assert service.hold_for(None, 0, None, page, [at(1, "a")], retries=1) == (service.Hold(None, 1), [])
    assert service.hold_for(None, 0, None, page, [at(1, "a"), at(4, "e")], retries=0)[1] == [at(1, "a"), at(4, "e")]


def test_the_held_runs_round_trip_in_the_watermark_and_four_held_types_still_fit():
    late = T0 + dt.timedelta(microseconds=123456)
    marks = {t: late for t in service.RESOURCE_TYPES}
    raw = service.dump_state(marks, {t: service.MAX_REFUSAL_RETRIES for t in service.RESOURCE_TYPES})
    assert len(raw) <= service.MAX_WATERMARK
    assert service.parse_state(raw) == (marks, {t: service.MAX_REFUSAL_RETRIES for t in service.RESOURCE_TYPES})
    raw = service.dump_state({"Patient": T0}, {"Observation": 3})
    assert raw == '{"Patient":"2026-06-01T00:00:00.000Z","Observation":[null,3]}'
    assert service.parse_state(raw) == ({"Patient": T0}, {"Observation": 3})
    assert service.parse_marks(raw) == {"Patient": T0}
    for broken in ('{"Observation":[null,0]}', '{"Observation":[null]}', '{"Observation":["x",1]}'):
        with pytest.raises(InvalidConnector):
            service.parse_state(broken)
    assert service.refusal_retries({}) == service.DEFAULT_REFUSAL_RETRIES
    for bad in (-1, 100, "3", True):
        with pytest.raises(InvalidConnector):
            service.refusal_retries({"refusal_retries": bad})


def test_a_searchset_without_usable_heads_is_refused_at_the_edge():
    with pytest.raises(ValueError, match="meta.lastUpdated"):
        SearchSet.model_validate(
            {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {"resourceType": "Patient"}}]}
        )
    with pytest.raises(ValueError, match="searchset"):
        SearchSet.model_validate({"resourceType": "Bundle", "type": "transaction"})
    with pytest.raises(ValueError, match="meta.lastUpdated: value_error"):
        SearchSet.model_validate(
            {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [
                    {"resource": {"resourceType": "Patient", "id": "p", "meta": {"lastUpdated": "2026-01-01T00:00:00"}}}
                ],
            }
        )


class FakeClient:
    name = "his"
    config = ConnectorConfig(base_url="https://his.example/fhir")

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def get_json(self, path, model, params=None):
        self.paths.append(path)
        return model.model_validate({"resourceType": "Bundle", "type": "searchset"})


@pytest.mark.parametrize(
    "url", ["https://evil.example/fhir/Observation?x=1", "https://his.example/fhirx/Observation", "/Observation"]
)
async def test_a_next_link_outside_the_base_url_is_refused(url):
    client = FakeClient()
    with pytest.raises(BadResponse, match="leaves"):
        await HttpHospitalFhir(client).follow(url, "Observation")  # type: ignore[arg-type]
    assert client.paths == []


async def test_a_next_link_under_the_base_url_is_followed_as_a_path():
    client = FakeClient()
    page = await HttpHospitalFhir(client).follow(
        "https://his.example/fhir/Observation?_after=a%7Cb&_count=5", "Observation"
    )  # type: ignore[arg-type]
    assert client.paths == ["/Observation?_after=a%7Cb&_count=5"] and page.resources == []
