"""Closed days: kept per library over the API (dates, or a weekday every week); a due date falling on a closed
day of the lending library moves to the next open day, at checkout and at renewal."""

from __future__ import annotations

import datetime as dt

from federation.db import utcnow
from federation.demo import RESIDENTS
from library.circulation.calendar import TZ, Calendar
from tests.circulation_support import add_copies
from tests.conftest import token_for
from tests.e2e.test_circulation_requests import checkout, tokens

CQ = RESIDENTS[0]
DAYS = "/api/v1/circulation/libraries/{}/closed-days"


def local(iso: str) -> dt.date:
    return dt.datetime.fromisoformat(iso).astimezone(TZ).date()


async def test_due_dates_move_past_closed_days(client, demo):
    await add_copies(demo, "CQL", ["CQL-C1", "CQL-C2"])
    lib = await tokens(client)
    admin = await token_for(client, "admin@federation")
    plain = (utcnow() + dt.timedelta(days=30)).astimezone(TZ).date()

    # closed on the weekday the loan would fall due, and on the day after it
    weekly = await client.post(
        DAYS.format("CQL"), json={"weekday": plain.weekday(), "note": "闭馆"}, headers=lib["CQL"]
    )
    assert weekly.status == 201, await weekly.text()
    nextday = plain + dt.timedelta(days=1)
    once = await client.post(DAYS.format("CQL"), json={"date": nextday.isoformat()}, headers=admin)
    assert once.status == 201
    dup = await client.post(DAYS.format("CQL"), json={"date": nextday.isoformat()}, headers=admin)
    assert (dup.status, (await dup.json())["code"]) == (409, "circulation.closed_day_exists")
    both = await client.post(DAYS.format("CQL"), json={"date": "2027-01-01", "weekday": 1}, headers=admin)
    assert both.status == 422
    other = await client.post(DAYS.format("CQL"), json={"weekday": 2}, headers=lib["SCL"])
    assert (other.status, (await other.json())["code"]) == (403, "circulation.not_your_library")
    nolib = await client.post(DAYS.format("CQH1"), json={"weekday": 2}, headers=admin)
    assert nolib.status == 404

    listed = await (await client.get(DAYS.format("CQL"))).json()  # public: readers plan their visits
    assert len(listed["items"]) == 2

    loan = await (await checkout(client, lib["CQL"], "CQL-C1", CQ, "CQL-MAIN")).json()
    assert local(loan["due_at"]) == plain + dt.timedelta(days=2)
    # another library's calendar does not matter: a loan at SCL falls due on the plain day
    await add_copies(demo, "SCL", ["SCL-C1"])
    other_loan = await (await checkout(client, lib["SCL"], "SCL-C1", CQ, "SCL-MAIN")).json()
    assert local(other_loan["due_at"]) == plain

    renewed = await (await client.post(f"/api/v1/circulation/loans/{loan['id']}/renewals", headers=lib["CQL"])).json()
    assert local(renewed["due_at"]) == plain + dt.timedelta(days=2)  # renewed today: the same 30 days, moved again

    # opened again: the next loan falls due on the plain day
    for row in listed["items"]:
        gone = await client.delete(f"{DAYS.format('CQL')}/{row['id']}", headers=lib["CQL"])
        assert gone.status == 204
    assert (await client.delete(f"{DAYS.format('CQL')}/{listed['items'][0]['id']}", headers=admin)).status == 404
    loan2 = await (await checkout(client, lib["CQL"], "CQL-C2", CQ, "CQL-MAIN")).json()
    assert local(loan2["due_at"]) == plain


async def test_a_library_cannot_close_every_weekday(client, demo):
    admin = await token_for(client, "admin@federation")
    for day in range(6):
        assert (await client.post(DAYS.format("CDL"), json={"weekday": day}, headers=admin)).status == 201
    last = await client.post(DAYS.format("CDL"), json={"weekday": 6}, headers=admin)
    assert (last.status, (await last.json())["code"]) == (422, "circulation.always_closed")


def test_open_days_between_skips_closed_days():
    cal = Calendar(frozenset({dt.date(2026, 3, 4)}), frozenset({6}))  # 2026-03-01 is a Sunday
    due = dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC)  # Sunday 10:00 in Chengdu
    back = dt.datetime(2026, 3, 9, 2, 0, tzinfo=dt.UTC)  # the next Monday
    # Mar 2..9 is 8 days; Mar 4 (a date) and Mar 8 (a Sunday) are closed
    assert cal.open_days_between(due, back) == 6
    assert cal.next_open(dt.datetime(2026, 3, 3, 20, 0, tzinfo=dt.UTC)) == dt.datetime(2026, 3, 4, 20, 0, tzinfo=dt.UTC)
