"""The first page of a FHIR Observation search for a patient with 1,000 results, through HTTP.

Goal: p50 <= 10 ms, p99 <= 40 ms on embedded SQLite. The application runs in this process behind a real HTTP
server on a loopback port (the client shares the event loop, so the figures are an upper bound); before the clock
starts the demo world is loaded and 1,000 Observations are bulk-inserted for one consenting resident.

In the same run, the baselines: ``GET /fhir/metadata`` (no database, no token) and ``GET /api/v1/me`` (the bearer
token checked, nothing else), so the search's own cost is the difference.

    .venv/bin/python bench/fhir_search.py
    .venv/bin/python bench/fhir_search.py --requests 500 --count 50
    .venv/bin/python bench/fhir_search.py --database postgresql+asyncpg://postgres@127.0.0.1:5432/tc_bench
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_P50_MS, GOAL_P99_MS = 10.0, 40.0


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


async def timed(session, url: str, headers: dict, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.get(url, headers=headers) as resp:
            await resp.read()
            assert resp.status == 200, resp.status
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def main(args: argparse.Namespace) -> None:
    from aiohttp import ClientSession
    from aiohttp.test_utils import TestServer
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from federation import demo as demo_world
    from federation.app import SERVER_LIMITS, create_app
    from federation.extensions import build_services
    from federation.migrate import upgrade
    from tests import fhir_support as fx
    from tests.conftest import make_settings

    tmp = Path(tempfile.mkdtemp(prefix="fhir-bench-"))
    overrides = {"database_url": args.database} if args.database else {}
    settings = make_settings(tmp, **overrides)
    url = settings.effective_database_url
    if url.startswith("postgresql"):
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
        await engine.dispose()
    await asyncio.to_thread(upgrade, url)
    svc = build_services(settings)
    await demo_world.load(svc)
    person = await fx.person_of(svc, demo_world.RESIDENTS[0].id_number)
    hospital = await fx.institution(svc, "CQH1")
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    await fx.store(svc, [fx.observation(person, hospital, start + dt.timedelta(hours=i)) for i in range(args.results)])

    server = TestServer(create_app(settings, svc=svc, run_background=False))
    await server.start_server(**SERVER_LIMITS)
    async with ClientSession() as session:
        async with session.post(
            server.make_url("/api/v1/auth/token"), json={"username": "doctor@SCH1", "password": "demo-password"}
        ) as resp:
            token = (await resp.json())["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        search = str(server.make_url(f"/fhir/Observation?patient={person}&_count={args.count}"))
        await timed(session, search, headers, 20)  # warm up: catalogue snapshot, statement caches
        figures = {
            "metadata (baseline)": await timed(session, str(server.make_url("/fhir/metadata")), {}, args.requests),
            "me (token baseline)": await timed(session, str(server.make_url("/api/v1/me")), headers, args.requests),
            f"first page, {args.results} results": await timed(session, search, headers, args.requests),
        }
    await server.close()
    await svc.close()
    print(f"database: {url.split(':', 1)[0]}  requests: {args.requests}  _count={args.count}")
    for name, values in figures.items():
        print(f"{name:30s} p50 {statistics.median(values):7.2f} ms   p99 {pct(values, 99):7.2f} ms")
    page = figures[f"first page, {args.results} results"]
    base = figures["me (token baseline)"]
    print(f"ratio to the token baseline: p50 {statistics.median(page) / statistics.median(base):.1f}x")
    ok = statistics.median(page) <= GOAL_P50_MS and pct(page, 99) <= GOAL_P99_MS
    print(f"goal p50 <= {GOAL_P50_MS} ms, p99 <= {GOAL_P99_MS} ms: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--results", type=int, default=1000)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--database", default=None)
    asyncio.run(main(parser.parse_args()))
