"""The service loads the text analysis's tables as it starts, before it serves: loaded on the first search
instead, they would stall the event loop under that request (most of the load holds the GIL)."""

from __future__ import annotations

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
