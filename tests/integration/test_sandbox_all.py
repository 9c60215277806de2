"""``twincity sandbox all`` (what ``make run`` starts beside the service) serves every outside system the demo
world's connectors call: a connector pointing at a port nobody serves shows a resident "unavailable" for good."""

from __future__ import annotations

from urllib.parse import urlsplit

from sqlalchemy import select

from connectors.framework.models import Connector
from federation.extensions import load


async def test_every_demo_connector_calls_a_port_sandbox_all_serves(demo):
    registry = load(demo.settings)  # registers every sandbox, with the port the demo world's connectors call
    for loader in registry.demo_loaders:
        if loader.__module__.startswith("connectors."):
            await loader(demo)
    from connectors.framework.sandbox import DEMO_PORTS

    async with demo.db.reader() as s:
        connectors = list((await s.execute(select(Connector))).scalars())
    kinds = {c.kind for c in connectors}
    assert {"social_security", "housing", "transport", "library_systems", "hospital_systems"} <= kinds
    served = set(DEMO_PORTS.values())
    unserved = {
        c.name: c.config["base_url"]
        for c in connectors
        if urlsplit(c.config["base_url"]).hostname == "127.0.0.1" and urlsplit(c.config["base_url"]).port not in served
    }
    assert unserved == {}
