"""The service on a real port, in a thread of the test process: for clients that need a real server (a standard
harvester, a browser)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from federation.migrate import upgrade
from federation.services import Services
from tests.conftest import make_settings


class LiveServer:
    """``prepare`` runs on the service's own event loop before the port opens (a catalogue, the demo world);
    ``run_background``: whether the service relays its outbox and runs jobs itself, as ``twincity run`` does."""

    def __init__(
        self,
        tmp: Path,
        prepare: Callable[[Services], Awaitable[object]] | None = None,
        *,
        run_background: bool = False,
    ) -> None:
        self.settings = make_settings(tmp)
        self.prepare = prepare
        self.run_background = run_background
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        upgrade(self.settings.effective_database_url)
        threading.Thread(target=self._run, daemon=True).start()
        assert self.ready.wait(120), "server did not start"

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.run_forever()

    async def _serve(self) -> None:
        from federation.app import SERVICES, create_app

        app = create_app(self.settings, run_background=self.run_background)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.services = app[SERVICES]
        if self.prepare is not None:
            await self.prepare(self.services)
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.ready.set()

    def call(self, coro: Awaitable[object], timeout: float = 30) -> object:
        """Run a coroutine on the server's loop (to look at or change its database) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
