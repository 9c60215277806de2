"""Two versions of the server side by side on the health bench's data set, requests alternating between them.

This machine's speed drifts between runs (the same code's first-page p50 moves between about 6 and 12 ms from one
run to the next), so two runs made one after the other compare the machine's phases, not the code. Here both
servers run at once against the same database, and each request goes to one and then the other (the order
swapped at every step): both see the same machine state. For each it prints p50, p99 and mean latency at the
client and the server process's CPU per request.

The base version is checked out from git into a temporary worktree (removed afterwards); the other is this
checkout. The data set is the one ``bench/health_query.py`` generated (run it first with the same ``--database``
and sizes); the schema must suit both versions (a migration added since the base is applied to the shared
database, so compare versions on either side of one only if the old code reads the new schema).

    .venv/bin/python bench/health_side_by_side.py --base cfe0b3d
    .venv/bin/python bench/health_side_by_side.py --base HEAD~3 \\
        --database postgresql+asyncpg://postgres@127.0.0.1:5432/tc_bench_health --requests 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import health_query as hq  # noqa: E402 - the data set's location, the server's start-up, the doctor


def start(tree: Path, database: str, data_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = hq.free_port()
    return hq.start_server(hq.server_env(data_dir, database, tree), port, None, log, tree), f"http://127.0.0.1:{port}"


async def compare(servers: dict[str, tuple[subprocess.Popen, str]], patient: str, n: int) -> None:
    import aiohttp

    paths = {
        "prior-results first page": f"/api/v1/health/patients/{patient}/prior-results",
        "FHIR Observation first page": f"/fhir/Observation?patient={patient}&_count=50",
    }
    async with aiohttp.ClientSession() as http:
        tokens = {}
        for name, (_, base) in servers.items():
            login = {"username": hq.DOCTOR, "password": hq.PASSWORD}
            async with http.post(f"{base}/api/v1/auth/token", json=login) as r:
                tokens[name] = {"Authorization": f"Bearer {(await r.json())['access_token']}"}
        print(f"{'operation':<30} {'version':<10} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8} {'server CPU ms/req':>18}")
        for label, path in paths.items():
            for name, (_, base) in servers.items():
                await hq.timed(http, base + path, tokens[name], 0, 30)  # warm-up
            latency: dict[str, list[float]] = {name: [] for name in servers}
            cpu = dict.fromkeys(servers, 0.0)
            order = list(servers)
            for i in range(n):
                for name in order if i % 2 else reversed(order):
                    proc, base = servers[name]
                    before, t = hq.process_cpu(proc.pid) or 0.0, time.perf_counter()
                    async with http.get(base + path, headers=tokens[name]) as r:
                        await r.read()
                        if r.status != 200:
                            raise SystemExit(f"{name} answered {r.status} on {path}")
                    latency[name].append(time.perf_counter() - t)
                    cpu[name] += (hq.process_cpu(proc.pid) or 0.0) - before
            for name in servers:
                lat = latency[name]
                mean = sum(lat) / len(lat) * 1000
                print(
                    f"{label:<30} {name:<10} {hq.ms(hq.pct(lat, 50))} {hq.ms(hq.pct(lat, 99))} {mean:>8.2f} "
                    f"{cpu[name] / n * 1000:>18.2f}"
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True, help="the git revision to compare this checkout with")
    ap.add_argument("--database", help="as given to health_query.py; default: its SQLite data set")
    ap.add_argument("--observations", type=int, default=1_000_000)
    ap.add_argument("--patients", type=int, default=50_000)
    ap.add_argument("--hospitals", type=int, default=300)
    ap.add_argument("--requests", type=int, default=500, help="per version and operation")
    args = ap.parse_args()

    data_dir, manifest = hq.cache_paths(args)
    if not manifest.exists():
        raise SystemExit(f"no data set at {manifest}: run bench/health_query.py with the same options first")
    patient = json.loads(manifest.read_text())["patient"]
    database = args.database or f"sqlite+aiosqlite:///{data_dir.with_suffix('.db')}"
    with tempfile.TemporaryDirectory(prefix="twc-side-") as tmp:
        base_tree = Path(tmp) / "base"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "-f", "--detach", str(base_tree), args.base], check=True)
        servers: dict[str, tuple[subprocess.Popen, str]] = {}
        try:
            rev = subprocess.run(
                ["git", "-C", str(base_tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
            ).stdout.strip()
            servers[rev] = start(base_tree, database, data_dir, Path(tmp) / "base.log")
            servers["this"] = start(ROOT, database, data_dir, Path(tmp) / "this.log")
            for proc, base in servers.values():
                asyncio.run(hq.wait_ready(base, proc))
            print(f"{args.requests} requests per version and operation, alternating; {database.split(':')[0]}")
            asyncio.run(compare(servers, patient, args.requests))
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait()
            subprocess.run([*git, "remove", "--force", str(base_tree)], check=False)


if __name__ == "__main__":
    main()
