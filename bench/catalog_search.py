"""Catalogue search latency and throughput on a big index: HTTP API vs the bare engine vs a fixed-JSON endpoint.

The index (default 1,000,000 works) is built once into ``--dir`` (default /var/tmp/twc-bench/search, never the
repository) and reused. Its documents are the production ones: generated records (the vocabulary of
``catalog_ingest``: Zipf-distributed Chinese title characters, Latin titles, names, ISBNs, 40 member libraries in
Chongqing and Chengdu, one to three records per work, copies with a status) go through
``library.catalog.indexing.build_document`` and are written straight into the embedded tantivy engine with
``TantivyEngine.rebuild`` (not through the database: generating 1M records through the ingest would only time
the ingest again; ``bench/catalog_ingest.py`` does that).

The query mix: common and rare Chinese bigrams, Latin words, pinyin (full and initials), ISBNs (typed with
hyphens), fielded queries (title:, author:, isbn:) and year ranges, each with two facets (``facet=library&
facet=language``), as the acceptance asks; one more one-client pass asks the API's default, all seven facets
(library, city, language, format, clc_class, year, available). Title and author are highlighted. The bare-engine
run makes the same calls (``library.catalog.service.search``), with seven facets and with the two.

Measured in one run, in this order:

(c) the bare engine in this process (no HTTP): p50/p99 per query, 7 facets and 2 facets;
(d) a bare aiohttp endpoint (no middleware, separate process) returning a fixed JSON body of a typical
    search response's size: one client p50/p99, and 20 clients' throughput: the HTTP floor;
(a) ``GET /api/v1/catalog/search`` on the real application (``create_app``, every middleware, JSON logs to a
    file, in its own process): one client, keep-alive, p50/p99 (two facets; then all seven);
(b) the same with 20 concurrent clients (one aiohttp session, 20 keep-alive connections): searches/s; and
    (b2) again with ``--server-processes`` (default 2) server processes sharing the port, as ``twincity run
    --workers 2`` serves. Beside each, the server processes' CPU per request.

The machine has two cores: the client process and the server process share them, so (b) measures the pair.

    .venv/bin/python bench/catalog_search.py                 # builds the 1M index on first use
    .venv/bin/python bench/catalog_search.py --docs 50000 --dir /tmp/s50k
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from catalog_ingest import HAN_RARE, Book  # noqa: E402
from procfs import process_cpu  # noqa: E402

LIBRARIES = [f"CQ{i:02d}" for i in range(20)] + [f"CD{i:02d}" for i in range(20)]
CITIES = {lib: ("重庆" if lib.startswith("CQ") else "成都") for lib in LIBRARIES}
SEED = 20240115


# --------------------------------------------------------------------------- the index


def _bib(book: Book, library: str, copies: int, variant: int) -> Any:
    from library.catalog.records import BibRecord, Item, Name

    statuses = ("available", "available", "available", "on_loan", "in_transit")
    return BibRecord(
        control_number=f"{library}{book.n:09d}",
        dialect="marc21" if variant % 2 else "unimarc",
        title=book.title if variant < 2 else f"{book.title} ({variant})",
        responsibility=book.author,
        names=(Name(book.author),),
        publisher=book.publisher,
        place=book.place,
        year=book.year,
        isbns=(book.isbn,),
        language=book.lang,
        subjects=book.subjects,
        clc=(book.clc,),
        items=tuple(
            Item(barcode=f"{library}{book.n}{c}", library=library, status=statuses[(book.n + c) % 5])
            for c in range(copies)
        ),
    )


def make_document(n: int) -> Any:
    from library.catalog.indexing import build_document

    book = Book(n)
    rng = random.Random(n)
    held = rng.sample(LIBRARIES, 1 + (n % 10 == 0) + (n % 4 == 0))  # most works in one library, some in 2-3
    bibs = [_bib(book, lib, 1 + (n + i) % 3, i) for i, lib in enumerate(held)]
    records = [types.SimpleNamespace(library=lib, deleted=False) for lib in held]
    items = [types.SimpleNamespace(library=i.library, status=i.status) for b in bibs for i in b.items]
    work = types.SimpleNamespace(id=f"w{n:010d}", title=book.title, year=book.year)
    return build_document(work, records, items, CITIES, bibs)


def settings_for(directory: Path) -> Any:
    from federation.settings import load_settings

    return load_settings(env="test", data_dir=directory / "var", log_json=True, log_level="INFO")


async def build_index(directory: Path, docs: int) -> None:
    from federation.migrate import upgrade
    from library.catalog import indexing
    from search.tantivy_engine import TantivyEngine

    settings = settings_for(directory)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(upgrade, settings.effective_database_url)
    engine = TantivyEngine(settings.data_dir / "search")
    await engine.open(indexing.INDEX, indexing.SCHEMA)
    t = time.perf_counter()

    async def batches():  # noqa: ANN202
        for start in range(0, docs, 5000):
            yield [make_document(n) for n in range(start, min(docs, start + 5000))]
            if start % 100_000 == 0:
                print(f"  {start:,} documents, {time.perf_counter() - t:.0f}s", flush=True)

    await engine.rebuild(indexing.INDEX, batches())
    count = await engine.count(indexing.INDEX)
    await engine.close()
    el = time.perf_counter() - t
    print(f"built the index: {count:,} documents in {el:.0f}s ({count / el:,.0f} documents/s, generation included)")
    (directory / "BUILT").write_text(str(count))


# --------------------------------------------------------------------------- the queries


def queries(docs: int) -> list[tuple[str, dict[str, Any]]]:
    """(kind, API query parameters): the same list every run."""
    rng = random.Random(SEED)
    books = [Book(rng.randrange(docs)) for _ in range(400)]
    zh = [b for b in books if b.lang == "chi" and len(b.title) >= 4]
    latin = [b for b in books if b.lang != "chi"]
    from pypinyin import Style, lazy_pinyin

    out: list[tuple[str, dict[str, Any]]] = []
    for w in ("中国", "研究", "历史", "文化", "发展", "经济", "社会", "理论", "技术", "教育"):
        out.append(("zh common bigram", {"q": w}))
    for i, ch in enumerate(HAN_RARE[:10]):
        out.append(("zh rare bigram", {"q": ch + "中" if i % 2 else "国" + ch}))
    for b in zh[:10]:
        out.append(("zh title words", {"q": b.title[:2] + " " + b.title[2:4]}))
    for w in ("history", "river garden", "modern theory", "python", "dragon", "journey", "silk road", "systems"):
        out.append(("latin words", {"q": w}))
    for b in zh[10:20]:
        out.append(("pinyin full", {"q": "".join(lazy_pinyin(b.title[:3], style=Style.NORMAL))}))
    for b in zh[20:30]:
        out.append(("pinyin initials", {"q": "".join(s[0] for s in lazy_pinyin(b.title[:3], style=Style.NORMAL))}))
    for b in books[:10]:
        i = b.isbn
        out.append(("isbn", {"q": f"{i[:3]}-{i[3]}-{i[4:8]}-{i[8:12]}-{i[12]}"}))
    for b in zh[30:40]:
        out.append(("fielded title/author", {"q": f"title:{b.title[:2]} author:{b.author[0]}"}))
    for b in books[10:20]:
        out.append(("fielded isbn", {"q": f"isbn:{b.isbn}"}))
    for i, b in enumerate(zh[40:48] + latin[:2]):
        lo = 1950 + 7 * i
        out.append(("year range", {"q": f"title:{b.title.split()[0][:2]}", "year_from": lo, "year_to": lo + 10}))
    return out


TWO_FACETS = ("library", "language")  # the acceptance's "each with two facets"


def request_of(params: dict[str, Any]) -> Any:
    from library.catalog import service

    return service.SearchRequest(
        q=params.get("q", ""), year_from=params.get("year_from"), year_to=params.get("year_to"), limit=20
    )


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def line(label: str, samples: list[float]) -> str:
    ms = [s * 1000 for s in samples]
    return (
        f"  {label:<46s} p50 {pct(ms, 50):7.2f} ms  p99 {pct(ms, 99):7.2f} ms  mean {statistics.fmean(ms):6.2f} ms"
        f"  ({len(ms)} requests)"
    )


# --------------------------------------------------------------------------- (c) the bare engine


async def bare_engine(directory: Path, qs: list[tuple[str, dict[str, Any]]], rounds: int) -> dict[str, Any]:
    from federation.extensions import build_services
    from library.catalog import service

    svc = build_services(settings_for(directory))
    try:
        await service.ensure_index(svc)
        print(f"  index: {await svc.search.count('catalog'):,} documents")
        for _, p in qs:  # warm-up: page cache, analysis caches
            await service.search(svc, request_of(p))
        seven: list[float] = []
        two: list[float] = []
        per_kind: dict[str, list[float]] = {}
        totals: dict[str, int] = {}
        for _ in range(rounds):
            for kind, p in qs:
                req = request_of(p)
                t = time.perf_counter()
                res = await service.search(svc, req)
                el = time.perf_counter() - t
                seven.append(el)
                per_kind.setdefault(kind, []).append(el)
                totals[kind] = totals.get(kind, 0) + res.total
                t = time.perf_counter()
                await service.search(svc, service.SearchRequest(**{**req.__dict__, "facets": ("library", "language")}))
                two.append(time.perf_counter() - t)
        return {"seven": seven, "two": two, "per_kind": per_kind, "totals": totals}
    finally:
        await svc.close()


# --------------------------------------------------------------------------- servers


def serve(directory: Path, kind: str, shared_port: int = 0) -> None:
    """A server process: the real application, or a bare aiohttp app with one fixed JSON answer; on ``shared_port``
    shared with the other server processes of the run (``SO_REUSEPORT``, as ``twincity run --workers``), or a
    free one."""
    from aiohttp import web

    async def main() -> None:
        if kind == "app":
            from sqlalchemy import event

            from federation import logs
            from federation.app import SERVER_LIMITS, SERVICES, create_app

            settings = settings_for(directory)
            logs.setup(settings.log_level, json_lines=settings.log_json)
            # no background runner: its outbox/job polling would blur the count of SQL statements per request
            app = create_app(settings, run_background=False)
            statements = [0]

            def count(*_: Any) -> None:
                statements[0] += 1

            for eng in {app[SERVICES].db.engine, app[SERVICES].db.read_engine}:
                event.listen(eng.sync_engine, "before_cursor_execute", count)
            limits = SERVER_LIMITS
        else:
            body = (directory / "typical-response.json").read_bytes()

            async def fixed(request: web.Request) -> web.Response:
                return web.Response(body=body, content_type="application/json")

            app = web.Application()
            app.router.add_get("/fixed", fixed)
            limits = {}
        runner = web.AppRunner(app, access_log=None, handler_args=limits)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", shared_port, reuse_port=True)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if kind == "app":
            from federation.app import SERVICES
            from library.catalog import service

            await service.ensure_index(app[SERVICES])  # open the index before the first request
        print(port, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        started = statements[0] if kind == "app" else 0
        await stop.wait()
        if kind == "app":
            (directory / "server-app-sql.txt").write_text(str(statements[0] - started))
        await runner.cleanup()

    asyncio.run(main())


class Server:
    def __init__(self, directory: Path, kind: str, port: int = 0) -> None:
        log = open(directory / f"server-{kind}-{port or 'first'}.log", "wb")  # noqa: SIM115 - closed in stop()
        self.log = log
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, __file__, "--dir", str(directory), "--serve", kind, "--port", str(port)],
            stdout=subprocess.PIPE,
            stderr=log,
        )
        first = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not first.strip().isdigit():
            raise RuntimeError(f"{kind} server did not start; see {log.name}")
        self.port = int(first)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# --------------------------------------------------------------------------- HTTP clients


async def one_client(url: str, params_list: list[Any], rounds: int) -> tuple[list[float], list[bytes]]:
    import aiohttp

    samples: list[float] = []
    bodies: list[bytes] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for p in params_list:  # warm-up
            async with session.get(url, params=p) as r:
                await r.read()
        for i in range(rounds):
            for p in params_list:
                t = time.perf_counter()
                async with session.get(url, params=p) as r:
                    body = await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{r.status}: {body[:300]!r}")
                samples.append(time.perf_counter() - t)
                if i == 0:
                    bodies.append(body)
    return samples, bodies


async def many_clients(url: str, params_list: list[Any], clients: int, seconds: float) -> tuple[int, float]:
    import aiohttp

    done = 0
    errors = 0
    deadline = time.perf_counter() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:

        async def client(k: int) -> None:
            nonlocal done, errors
            i = k
            while time.perf_counter() < deadline:
                async with session.get(url, params=params_list[i % len(params_list)]) as r:
                    await r.read()
                    if r.status == 200:
                        done += 1
                    else:
                        errors += 1
                i += 1

        t = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(clients)))
        el = time.perf_counter() - t
    if errors:
        print(f"  !! {errors} non-200 answers")
    return done, el


# --------------------------------------------------------------------------- main


def cpu_per(pids: list[int], before: float | None, requests: int) -> str:
    """The server processes' CPU per request since ``before`` (their threads' included), as a column."""
    after = sum(process_cpu(pid) or 0.0 for pid in pids)
    if before is None or not after or not requests:
        return ""
    return f"  server CPU {1000 * (after - before) / requests:.2f} ms/request"


async def run(args: argparse.Namespace) -> None:
    directory = Path(args.dir)
    if not (directory / "BUILT").exists():
        print(f"building the index of {args.docs:,} documents in {directory} (once)", flush=True)
        await build_index(directory, args.docs)
    docs = int((directory / "BUILT").read_text())
    qs = queries(docs)
    every = [p for _, p in qs]  # the API's default: all seven facets
    params = [[*p.items(), *(("facet", f) for f in TWO_FACETS)] for p in every]  # each with two facets
    print(f"index of {docs:,} documents in {directory}; {len(qs)} queries; load average {os.getloadavg()[0]:.2f}")

    print("(c) bare engine, in-process: library.catalog.service.search (parse + engine, 7 facets, highlights)")
    bare = await bare_engine(directory, qs, args.rounds)
    print(line("bare engine, API's 7 facets", bare["seven"]))
    print(line("bare engine, 2 facets (library, language)", bare["two"]))
    for kind, samples in bare["per_kind"].items():
        hits = bare["totals"][kind] // max(1, len(samples))
        print(line(f"  {kind} (~{hits:,} hits)", samples))

    print("(a) GET /api/v1/catalog/search, the real application in its own process")
    app = Server(directory, "app")
    more: list[Server] = []
    try:
        url = f"http://127.0.0.1:{app.port}/api/v1/catalog/search"
        cpu = process_cpu(app.proc.pid)
        samples, bodies = await one_client(url, params, args.rounds)
        cpu_one = cpu_per([app.proc.pid], cpu, len(samples))
        print(line("HTTP API, 1 client, 2 facets", samples) + cpu_one)
        cpu = process_cpu(app.proc.pid)
        seven, _ = await one_client(url, every, args.rounds)
        print(line("HTTP API, 1 client, all 7 facets", seven) + cpu_per([app.proc.pid], cpu, len(seven)))
        typical = sorted(bodies, key=len)[len(bodies) // 2]
        (directory / "typical-response.json").write_bytes(typical)
        print(f"  response bodies: median {len(typical):,} bytes")
        cpu = process_cpu(app.proc.pid)
        done, el = await many_clients(url, params, args.clients, args.seconds)
        print(
            f"(b) HTTP API, 2 facets, {args.clients} clients: {done:,} searches in {el:.1f}s = {done / el:,.0f} "
            "searches/s" + cpu_per([app.proc.pid], cpu, done)
        )
        hz, _ = await one_client(f"http://127.0.0.1:{app.port}/healthz", [{}], len(samples))
        print(line("real app GET /healthz (middleware floor)", hz))
        if args.server_processes > 1:
            more = [Server(directory, "app", app.port) for _ in range(args.server_processes - 1)]
            pids = [app.proc.pid] + [m.proc.pid for m in more]
            await many_clients(url, params, args.clients, 2.0)  # every process has opened the index and warmed
            cpu = sum(process_cpu(pid) or 0.0 for pid in pids)
            done, el = await many_clients(url, params, args.clients, args.seconds)
            print(
                f"(b2) HTTP API, 2 facets, on {len(pids)} server processes sharing the port (twincity run --workers "
                f"{len(pids)}), {args.clients} clients: {done:,} searches in {el:.1f}s = {done / el:,.0f} "
                f"searches/s" + cpu_per(pids, cpu, done)
            )
    finally:
        for m in more:
            m.stop()
        app.stop()
    sql = directory / "server-app-sql.txt"
    if sql.exists():
        print(f"  SQL statements the application ran for all those requests: {sql.read_text()}")

    print("(d) bare aiohttp endpoint, fixed JSON body of the median search response, its own process")
    fixed = Server(directory, "fixed")
    try:
        url = f"http://127.0.0.1:{fixed.port}/fixed"
        cpu = process_cpu(fixed.proc.pid)
        samples, _ = await one_client(url, params, args.rounds)
        print(line("fixed JSON, 1 client", samples) + cpu_per([fixed.proc.pid], cpu, len(samples)))
        cpu = process_cpu(fixed.proc.pid)
        done, el = await many_clients(url, params, args.clients, args.seconds)
        print(
            f"  fixed JSON, {args.clients} clients: {done:,} requests in {el:.1f}s = {done / el:,.0f} requests/s"
            + cpu_per([fixed.proc.pid], cpu, done)
        )
    finally:
        fixed.stop()
    print("goals: HTTP p50 <= 3 ms, p99 <= 10 ms with one client; >= 1,000 searches/s with 20 clients")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/var/tmp/twc-bench/search", help="index and server data (reused)")
    ap.add_argument("--docs", type=int, default=1_000_000, help="documents, when the index is built")
    ap.add_argument("--rounds", type=int, default=5, help="passes over the query list for latencies")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=15.0, help="duration of each throughput run")
    ap.add_argument(
        "--server-processes", type=int, default=2, help="for a second 20-client run on that many server processes"
    )
    ap.add_argument("--serve", choices=("app", "fixed"), help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(Path(args.dir), args.serve, args.port)
        return
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
