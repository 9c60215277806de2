"""The state machines of circulation as declared tables, and the small runner that fires a transition.

Each machine is a table ``(state, trigger) -> (destination, guard name)``. ``fire`` looks the pair up, runs the
named guard over facts the caller gathered, and returns the transition with its events. It reads nothing, writes
nothing and commits nothing: the service persists the change with one conditional UPDATE (``WHERE state =
source``), so two desks racing on one copy cannot both win, and publishes the events through its unit of work.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from library.circulation import errors

# item states
AVAILABLE = "available"
ON_LOAN = "on_loan"
IN_TRANSIT = "in_transit"
ON_HOLD_SHELF = "on_hold_shelf"
MISSING = "missing"
LOST = "lost"
WITHDRAWN = "withdrawn"
ITEM_STATES = (AVAILABLE, ON_LOAN, IN_TRANSIT, ON_HOLD_SHELF, MISSING, LOST, WITHDRAWN)

# loan states (LOST is shared with the item's: the copy was declared lost while lent)
ACTIVE = "active"
RETURNED = "returned"
LOAN_STATES = (ACTIVE, RETURNED, LOST)

# transit states (IN_TRANSIT is shared with the item's)
RECEIVED = "received"
TRANSIT_STATES = (IN_TRANSIT, RECEIVED)

# request states (IN_TRANSIT is shared with the item's)
QUEUED = "queued"
TARGETED = "targeted"
READY = "ready"
FULFILLED = "fulfilled"
CANCELLED = "cancelled"
EXPIRED = "expired"
REQUEST_STATES = (QUEUED, TARGETED, IN_TRANSIT, READY, FULFILLED, CANCELLED, EXPIRED)
OPEN_REQUEST_STATES = (QUEUED, TARGETED, IN_TRANSIT, READY)

Table = Mapping[tuple[str, str], tuple[str, str | None]]

ITEM_TRANSITIONS: Table = {
    (AVAILABLE, "checkout"): (ON_LOAN, "item_here"),
    (ON_HOLD_SHELF, "checkout"): (ON_LOAN, "held_for_reader"),
    (ON_LOAN, "checkin"): (AVAILABLE, None),
    (ON_LOAN, "checkin_transit"): (IN_TRANSIT, None),
    (ON_LOAN, "checkin_hold"): (ON_HOLD_SHELF, None),  # for requests: the returned copy waits for the next reader
    (AVAILABLE, "checkin_transit"): (IN_TRANSIT, None),  # a copy found away from where it belongs goes home
    (MISSING, "checkin"): (AVAILABLE, None),  # found
    (MISSING, "checkin_transit"): (IN_TRANSIT, None),
    (LOST, "checkin"): (AVAILABLE, None),  # the reader brought it back after all
    (LOST, "checkin_transit"): (IN_TRANSIT, None),
    (IN_TRANSIT, "receive"): (AVAILABLE, "at_destination"),
    (AVAILABLE, "checkin_hold"): (ON_HOLD_SHELF, None),  # pulled for a request picked up here
    (IN_TRANSIT, "receive_hold"): (ON_HOLD_SHELF, "at_destination"),  # arrived for a request picked up here
    (ON_HOLD_SHELF, "release"): (AVAILABLE, None),  # request cancelled or expired, nobody else waits
    (ON_HOLD_SHELF, "release_transit"): (IN_TRANSIT, None),  # ... and the copy goes to the next reader or home
    (AVAILABLE, "declare_missing"): (MISSING, None),
    (ON_LOAN, "declare_lost"): (LOST, None),
    (AVAILABLE, "withdraw"): (WITHDRAWN, None),
    (MISSING, "withdraw"): (WITHDRAWN, None),
    (LOST, "withdraw"): (WITHDRAWN, None),
    (MISSING, "found"): (AVAILABLE, None),  # found on the shelf where it belongs
    (LOST, "found"): (AVAILABLE, None),
}

LOAN_TRANSITIONS: Table = {
    (ACTIVE, "renew"): (ACTIVE, "renewals_left"),
    (ACTIVE, "checkin"): (RETURNED, None),
    (ACTIVE, "declare_lost"): (LOST, None),  # the reader lost the copy: the loan ends, the counters free up
}

TRANSIT_TRANSITIONS: Table = {
    (IN_TRANSIT, "receive"): (RECEIVED, "at_destination"),
}

REQUEST_TRANSITIONS: Table = {
    (QUEUED, "target"): (TARGETED, None),  # an available copy is picked: it is on its library's pull list
    (TARGETED, "untarget"): (QUEUED, None),  # the picked copy was lent at the shelf before it was pulled
    (QUEUED, "ship"): (IN_TRANSIT, None),  # a copy checked in elsewhere travels to the pickup point
    (TARGETED, "ship"): (IN_TRANSIT, None),  # pulled, travels to the pickup point
    (QUEUED, "shelve"): (READY, None),
    (TARGETED, "shelve"): (READY, None),  # pulled at the pickup library itself
    (IN_TRANSIT, "shelve"): (READY, None),  # received at the pickup point
    (READY, "fill"): (FULFILLED, None),  # the checkout to the reader, guarded by the item's held_for_reader
    (QUEUED, "cancel"): (CANCELLED, None),
    (TARGETED, "cancel"): (CANCELLED, None),
    (IN_TRANSIT, "cancel"): (CANCELLED, None),
    (READY, "cancel"): (CANCELLED, None),
    (READY, "expire"): (EXPIRED, "hold_expired"),
}

TRANSITIONS: dict[str, Table] = {
    "item": ITEM_TRANSITIONS,
    "loan": LOAN_TRANSITIONS,
    "transit": TRANSIT_TRANSITIONS,
    "request": REQUEST_TRANSITIONS,
}

# What a refused pair means to the caller: (machine, trigger) -> the error raised when no row matches.
REFUSALS: dict[tuple[str, str], type[errors.DomainError]] = {
    ("item", "checkout"): errors.ItemUnavailable,
    ("item", "checkin"): errors.NotOnLoan,
    ("item", "checkin_transit"): errors.NotOnLoan,
    ("item", "receive"): errors.TransitClosed,
    ("loan", "renew"): errors.LoanNotActive,
    ("loan", "checkin"): errors.LoanNotActive,
    ("transit", "receive"): errors.TransitClosed,
    ("request", "cancel"): errors.RequestClosed,
    ("request", "fill"): errors.RequestClosed,
    ("request", "expire"): errors.RequestClosed,
}


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the guards look at, gathered by the service before firing."""

    desk_library: str | None = None
    current_library: str | None = None
    destination_library: str | None = None
    renewals: int = 0
    max_renewals: int = 0
    reader_id: str | None = None
    held_for_reader_id: str | None = None
    hold_until: dt.datetime | None = None
    now: dt.datetime | None = None


def _item_here(f: Facts) -> None:
    if f.desk_library != f.current_library:
        raise errors.ItemNotHere(f"the copy is at {f.current_library or 'no library'}, not at {f.desk_library}")


def _held_for_reader(f: Facts) -> None:
    _item_here(f)
    if f.held_for_reader_id is None or f.held_for_reader_id != f.reader_id:
        raise errors.NotHeldForReader("the copy on the hold shelf is kept for another reader")


def _at_destination(f: Facts) -> None:
    if f.desk_library != f.destination_library:
        raise errors.NotDestination(f"the transit goes to {f.destination_library}, not to {f.desk_library}")


def _hold_expired(f: Facts) -> None:
    if f.hold_until is None or f.now is None or f.now < f.hold_until:
        raise errors.HoldNotExpired(f"the copy is kept until {f.hold_until.isoformat() if f.hold_until else '-'}")


def _renewals_left(f: Facts) -> None:
    if f.renewals >= f.max_renewals:
        raise errors.RenewalLimit(f"renewed {f.renewals} time(s) of {f.max_renewals} allowed", max=f.max_renewals)


GUARDS: dict[str, Callable[[Facts], None]] = {
    "item_here": _item_here,
    "held_for_reader": _held_for_reader,
    "at_destination": _at_destination,
    "renewals_left": _renewals_left,
    "hold_expired": _hold_expired,
}


@dataclasses.dataclass(frozen=True)
class Event:
    topic: str
    payload: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Transition:
    machine: str
    subject_id: str
    source: str
    trigger: str
    destination: str
    at: dt.datetime
    events: tuple[Event, ...]


def fire(machine: str, subject_id: str, state: str, trigger: str, facts: Facts, *, at: dt.datetime) -> Transition:
    """The transition ``trigger`` takes ``subject_id`` through from ``state``; raises the refusal's domain error."""
    table = TRANSITIONS[machine]
    row = table.get((state, trigger))
    if row is None:
        refusal = REFUSALS.get((machine, trigger), errors.TransitionRefused)
        if machine == "item" and state == IN_TRANSIT and trigger.startswith("checkin"):
            refusal = errors.ItemInTransit
        raise refusal(f"the {machine} is {state}: cannot {trigger.replace('_', ' ')}", state=state)
    destination, guard = row
    if guard is not None:
        GUARDS[guard](facts)
    event = Event(
        f"circulation.{machine}_changed",
        {f"{machine}_id": subject_id, "from": state, "to": destination, "trigger": trigger, "at": at.isoformat()},
    )
    return Transition(machine, subject_id, state, trigger, destination, at, (event,))
