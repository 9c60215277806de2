"""The circulation state tables, one test per transition, plus each guard's refusal and the refused pairs."""

from __future__ import annotations

import datetime as dt

import pytest

from library.circulation import errors, states
from library.circulation.states import Facts, fire

AT = dt.datetime(2026, 3, 1, 9, 0, tzinfo=dt.UTC)
HERE = Facts(
    desk_library="CQL",
    current_library="CQL",
    destination_library="CQL",
    renewals=0,
    max_renewals=1,
    reader_id="r1",
    held_for_reader_id="r1",
    hold_until=AT - dt.timedelta(minutes=1),
    now=AT,
)

# the specification: (machine, state, trigger) -> destination
SPEC = {
    ("item", "available", "checkout"): "on_loan",
    ("item", "on_hold_shelf", "checkout"): "on_loan",
    ("item", "on_loan", "checkin"): "available",
    ("item", "on_loan", "checkin_transit"): "in_transit",
    ("item", "on_loan", "checkin_hold"): "on_hold_shelf",
    ("item", "available", "checkin_transit"): "in_transit",
    ("item", "missing", "checkin"): "available",
    ("item", "missing", "checkin_transit"): "in_transit",
    ("item", "lost", "checkin"): "available",
    ("item", "lost", "checkin_transit"): "in_transit",
    ("item", "in_transit", "receive"): "available",
    ("item", "available", "checkin_hold"): "on_hold_shelf",
    ("item", "in_transit", "receive_hold"): "on_hold_shelf",
    ("item", "on_hold_shelf", "release"): "available",
    ("item", "on_hold_shelf", "release_transit"): "in_transit",
    ("item", "available", "declare_missing"): "missing",
    ("item", "on_loan", "declare_lost"): "lost",
    ("item", "available", "withdraw"): "withdrawn",
    ("item", "missing", "withdraw"): "withdrawn",
    ("item", "lost", "withdraw"): "withdrawn",
    ("item", "missing", "found"): "available",
    ("item", "lost", "found"): "available",
    ("loan", "active", "renew"): "active",
    ("loan", "active", "checkin"): "returned",
    ("loan", "active", "declare_lost"): "lost",
    ("transit", "in_transit", "receive"): "received",
    ("request", "queued", "target"): "targeted",
    ("request", "targeted", "untarget"): "queued",
    ("request", "queued", "ship"): "in_transit",
    ("request", "targeted", "ship"): "in_transit",
    ("request", "queued", "shelve"): "ready",
    ("request", "targeted", "shelve"): "ready",
    ("request", "in_transit", "shelve"): "ready",
    ("request", "ready", "fill"): "fulfilled",
    ("request", "queued", "cancel"): "cancelled",
    ("request", "targeted", "cancel"): "cancelled",
    ("request", "in_transit", "cancel"): "cancelled",
    ("request", "ready", "cancel"): "cancelled",
    ("request", "ready", "expire"): "expired",
}


def test_the_tables_are_the_specification():
    declared = {(m, s, t): dest for m, table in states.TRANSITIONS.items() for (s, t), (dest, _) in table.items()}
    assert declared == SPEC


def test_every_state_is_reachable_or_a_start():
    for machine, known in (
        ("item", states.ITEM_STATES),
        ("loan", states.LOAN_STATES),
        ("transit", states.TRANSIT_STATES),
        ("request", states.REQUEST_STATES),
    ):
        table = states.TRANSITIONS[machine]
        mentioned = {s for s, _ in table} | {d for d, _ in table.values()}
        assert mentioned == set(known), machine
        for guard in (g for _, g in table.values() if g):
            assert guard in states.GUARDS


@pytest.mark.parametrize(("machine", "state", "trigger"), sorted(SPEC), ids=lambda x: x)
def test_transition(machine, state, trigger):
    t = fire(machine, "x1", state, trigger, HERE, at=AT)
    assert (t.source, t.trigger, t.destination) == (state, trigger, SPEC[(machine, state, trigger)])
    assert [e.topic for e in t.events] == [f"circulation.{machine}_changed"]
    assert t.events[0].payload == {
        f"{machine}_id": "x1",
        "from": state,
        "to": t.destination,
        "trigger": trigger,
        "at": AT.isoformat(),
    }


@pytest.mark.parametrize(
    ("machine", "state", "trigger", "facts", "error"),
    [
        ("item", "available", "checkout", Facts(desk_library="SCL", current_library="CQL"), errors.ItemNotHere),
        (
            "item",
            "on_hold_shelf",
            "checkout",
            Facts("CQL", "CQL", reader_id="a", held_for_reader_id="b"),
            errors.NotHeldForReader,
        ),
        ("item", "in_transit", "receive", Facts(desk_library="SCL", destination_library="CQL"), errors.NotDestination),
        (
            "transit",
            "in_transit",
            "receive",
            Facts(desk_library="SCL", destination_library="CQL"),
            errors.NotDestination,
        ),
        ("loan", "active", "renew", Facts(renewals=1, max_renewals=1), errors.RenewalLimit),
        (
            "item",
            "in_transit",
            "receive_hold",
            Facts(desk_library="SCL", destination_library="CQL"),
            errors.NotDestination,
        ),
        ("request", "ready", "expire", Facts(hold_until=AT, now=AT - dt.timedelta(seconds=1)), errors.HoldNotExpired),
        ("request", "ready", "expire", Facts(), errors.HoldNotExpired),
    ],
)
def test_guard_refuses(machine, state, trigger, facts, error):
    with pytest.raises(error):
        fire(machine, "x1", state, trigger, facts, at=AT)


@pytest.mark.parametrize(
    ("machine", "state", "trigger", "error"),
    [
        ("item", "on_loan", "checkout", errors.ItemUnavailable),
        ("item", "in_transit", "checkout", errors.ItemUnavailable),
        ("item", "withdrawn", "checkout", errors.ItemUnavailable),
        ("item", "missing", "checkout", errors.ItemUnavailable),
        ("item", "available", "checkin", errors.NotOnLoan),
        ("item", "in_transit", "checkin", errors.ItemInTransit),
        ("item", "in_transit", "checkin_transit", errors.ItemInTransit),
        ("item", "available", "receive", errors.TransitClosed),
        ("loan", "returned", "renew", errors.LoanNotActive),
        ("loan", "returned", "checkin", errors.LoanNotActive),
        ("transit", "received", "receive", errors.TransitClosed),
        ("item", "withdrawn", "withdraw", errors.TransitionRefused),
        ("item", "on_loan", "release", errors.TransitionRefused),
        ("request", "fulfilled", "cancel", errors.RequestClosed),
        ("request", "cancelled", "cancel", errors.RequestClosed),
        ("request", "expired", "cancel", errors.RequestClosed),
        ("request", "queued", "fill", errors.RequestClosed),
        ("request", "targeted", "expire", errors.RequestClosed),
        ("request", "fulfilled", "ship", errors.TransitionRefused),
        ("request", "cancelled", "shelve", errors.TransitionRefused),
    ],
)
def test_refused_pairs(machine, state, trigger, error):
    with pytest.raises(error) as e:
        fire(machine, "x1", state, trigger, HERE, at=AT)
    assert e.value.extra["state"] == state
