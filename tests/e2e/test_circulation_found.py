"""Transition item missing|lost --found--> available: the copy turned up; a request waiting for its work takes it."""

from __future__ import annotations

from sqlalchemy import select

from federation.demo import RESIDENTS
from library.circulation.models import Request
from tests.conftest import token_for
from tests.e2e.test_circulation_declare_missing import declare
from tests.e2e.test_circulation_requests import one_work, place, pull_list, tokens

CQ = RESIDENTS[0]


async def test_found(client, demo):
    work = await one_work(demo, {"CDL": ["CDL-F1"]})
    lib = await tokens(client)
    assert (await declare(client, lib["CDL"], "CDL-F1", "missing")).status == 200
    me = await token_for(client, CQ.id_number)
    req = await (await place(client, me, "CQL-MAIN", work_id=work)).json()
    assert req["state"] == "queued"  # no copy to target
    resp = await declare(client, lib["CDL"], "CDL-F1", "found")
    assert (await resp.json())["item"]["status"] == "available"
    async with demo.db.reader() as s:
        assert (await s.execute(select(Request.state).where(Request.id == req["id"]))).scalar_one() == "targeted"
    assert await pull_list(client, lib["CDL"], "CDL-MAIN") == [("CDL-F1", "CQL-MAIN")]
    again = await declare(client, lib["CDL"], "CDL-F1", "found")
    assert (again.status, (await again.json())["code"]) == (409, "circulation.transition_refused")
