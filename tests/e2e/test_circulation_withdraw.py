"""Transition item available|missing|lost --withdraw--> withdrawn: the copy leaves the collection for good."""

from __future__ import annotations

from federation.demo import RESIDENTS
from tests.circulation_support import add_copies
from tests.e2e.test_circulation_declare_missing import declare
from tests.e2e.test_circulation_requests import checkin, checkout, tokens

CQ = RESIDENTS[0]


async def test_withdraw(client, demo):
    await add_copies(demo, "SCL", ["SCL-W1", "SCL-W2"])
    lib = await tokens(client)
    assert (await (await declare(client, lib["SCL"], "SCL-W1", "withdrawn")).json())["item"]["status"] == "withdrawn"
    assert (await (await declare(client, lib["SCL"], "SCL-W2", "missing")).json())["item"]["status"] == "missing"
    assert (await (await declare(client, lib["SCL"], "SCL-W2", "withdrawn")).json())["item"]["status"] == "withdrawn"
    lent = await checkout(client, lib["SCL"], "SCL-W1", CQ, "SCL-MAIN")
    assert (lent.status, (await lent.json())["code"]) == (409, "circulation.item_unavailable")
    assert (await checkin(client, lib["SCL"], "SCL-W1", "SCL-MAIN")).status == 409
    found = await declare(client, lib["SCL"], "SCL-W1", "found")
    assert (found.status, (await found.json())["code"]) == (409, "circulation.transition_refused")
