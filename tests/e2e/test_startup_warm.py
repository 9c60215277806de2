"""The service loads the text analysis's tables as it starts, before it serves: loaded on the first search
instead, they would stall the event loop under that request (most of the load holds the GIL)."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient, TestServer

from federation.app import create_app


async def test_the_tables_are_loaded_before_the_first_request(settings, svc, monkeypatch):
    from search import analysis

    calls: list[str] = []
    monkeypatch.setattr(analysis, "warm", lambda: calls.append("warm"))
    app = create_app(settings, svc=svc, run_background=False)
    assert calls == []  # building the app loads nothing
    async with TestClient(TestServer(app)) as client:
        assert calls == ["warm"]
        assert (await client.get("/healthz")).status == 200
    assert calls == ["warm"]


async def test_the_start_checks_run_once_beside_the_first_requests(settings, svc, caplog):
    """``Services.on_serve``: each check runs once as the server starts; a failing one is logged, and the server
    serves all the same."""
    ran: list[str] = []

    async def fine(s) -> None:
        ran.append("fine")

    async def broken(s) -> None:
        ran.append("broken")
        raise RuntimeError("the check could not reach its store")

    svc.on_serve(fine)
    svc.on_serve(broken)
    app = create_app(settings, svc=svc, run_background=False)
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/healthz")).status == 200
        for _ in range(100):
            if len(ran) >= 2:
                break
            await asyncio.sleep(0.01)
    assert sorted(ran) == ["broken", "fine"]
    assert "the start-up check" in caplog.text and "could not reach its store" in caplog.text
