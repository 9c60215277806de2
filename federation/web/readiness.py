"""Readiness checks: can this process reach what it needs to serve?"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from federation.services import Services
from federation.settings import SearchEngine


async def _timed(name: str, coro: Any, limit_s: float = 2.0) -> dict[str, Any]:
    try:
        await asyncio.wait_for(coro, limit_s)
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return {"ok": False, "error": f"{e.__class__.__name__}: {str(e)[:200]}"}
    return {"ok": True}


async def _search(svc: Services) -> None:
    s = svc.settings
    if s.search_engine is SearchEngine.ELASTICSEARCH:
        from elasticsearch import AsyncElasticsearch

        client = AsyncElasticsearch(s.elasticsearch_url or "http://127.0.0.1:9200")
        try:
            if not await client.ping():
                raise ConnectionError("elasticsearch did not answer the ping")
        finally:
            await client.close()
        return
    index_dir = s.data_dir / "search"
    index_dir.mkdir(parents=True, exist_ok=True)
    if not os.access(index_dir, os.W_OK):
        raise PermissionError(f"{index_dir} is not writable")


async def _broker(svc: Services) -> None:
    url = svc.settings.broker_url
    if not url:
        return

    def probe() -> None:
        from kombu import Connection

        with Connection(url, connect_timeout=1.5) as conn:
            conn.ensure_connection(max_retries=1)

    await asyncio.get_running_loop().run_in_executor(None, probe)


async def check(svc: Services) -> dict[str, dict[str, Any]]:
    names = ("database", "search", "broker")
    results = await asyncio.gather(
        _timed("database", svc.db.ping()), _timed("search", _search(svc)), _timed("broker", _broker(svc))
    )
    return dict(zip(names, results, strict=True))
