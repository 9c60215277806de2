"""End-to-end catalogue ingest: MARC file → parsed → stored in SQLite → indexed and searchable in tantivy.

Generates a union-catalogue-shaped corpus (three member libraries: two MARC21 files with Koha 952 items and one
CNMARC file with 905 items, every record with one to three copies, ~30% of the records sharing an ISBN with a
record of another library) and loads it through the production path (``library.catalog.tasks.ingest_file``,
the outbox relay, the embedded tantivy engine) into a fresh SQLite database. The clock stops after the final
``refresh``, once the engine's document count equals the number of works in the database.

Baseline, same run, same files: bare ``pymarc.MARCReader`` (MARC21 as pymarc reads it by default; the CNMARC
file with ``force_utf8=True``, the only way pymarc reads it correctly), and our own parse + map alone.

    .venv/bin/python bench/catalog_ingest.py                    # 200,000 records
    .venv/bin/python bench/catalog_ingest.py --records 30000 --profile /tmp/ingest.prof
    .venv/bin/python bench/catalog_ingest.py --rss              # ~1 GB MARC21 file, prints peak RSS

Titles, authors, years, ISBNs and barcodes vary per record (analysis caches get no free ride): titles are drawn
from a Zipf-like pool of Chinese characters or Latin words, as in a real catalogue. Files are cached under
``--dir`` (default /var/tmp/twc-bench/ingest); the database and index are rebuilt on every run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import os
import random
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from procfs import children  # noqa: E402

from tests.fixtures.marc_corpus import LEADER_MARC21, LEADER_UNIMARC, MarcSpec, iso2709  # noqa: E402

# --------------------------------------------------------------------------- vocabulary (shared with catalog_search)

# the most frequent characters of Chinese book titles first: a Zipf-like draw makes some bigrams very common
HAN_COMMON = (
    "中国的学研究史论文化与新编代现理社会经济发展管理技术工程教育法律哲学艺术医学小说诗词集选读本全解程序设计入门"
    "实践数据结构算法网络安全城市规划交通旅游自然科学历史地图古典重庆成都四川巴蜀长江山城图书馆双城火锅熊猫红楼梦"
    "三体黑暗森林平凡世界活着围城边城人民出版大众生活思想政治世纪英语汉语词典手册概论原理基础应用方法分析报告年鉴"
)
HAN_RARE = "鬱龘齉爨麤靐饕餮魑魅魍魉罍觥觚斝盉甗鼐彝罂瓿簋簠匜鍪鏊鐎錞鉦鐃铙鏄镈钲铎錞于蕤宾夹钟姑洗仲吕林钟南吕应钟"
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红雪芹慈欣伯遥文渝川蓉嘉陵峡江"
LATIN = (
    "river",
    "mountain",
    "city",
    "library",
    "twin",
    "bridge",
    "night",
    "market",
    "tea",
    "silk",
    "road",
    "song",
    "poem",
    "history",
    "science",
    "novel",
    "garden",
    "winter",
    "spring",
    "autumn",
    "summer",
    "light",
    "stone",
    "cloud",
    "dragon",
    "phoenix",
    "harbour",
    "lantern",
    "letter",
    "journey",
    "python",
    "data",
    "modern",
    "theory",
    "practice",
    "world",
    "guide",
    "economics",
    "society",
    "culture",
    "philosophy",
    "engineering",
    "medicine",
    "education",
    "introduction",
    "handbook",
    "principles",
    "analysis",
    "design",
    "systems",
    "networks",
    "security",
    "planning",
    "transport",
    "tourism",
)
LATIN_NAMES = ("Smith, John", "García Márquez, Gabriel", "Brontë, Emily", "Zhang, Ailing", "Lu, Xun", "Ba, Jin")
PUBLISHERS = (
    "人民文学出版社",
    "重庆出版社",
    "四川人民出版社",
    "中华书局",
    "商务印书馆",
    "科学出版社",
    "Twin City Press",
)
PLACES = ("北京", "重庆", "成都", "上海", "Chengdu")
CLC = ("I247.5", "K203", "TP311.5", "G250", "I242.4", "O4", "F121", "D61", "TU984", "R2", "H31", "J292")
SUBJECTS = ("长篇小说", "中国", "历史", "城市规划", "计算机", "旅游", "经济管理", "Fiction", "History", "Economics")
LANGS = ("chi",) * 7 + ("eng", "eng", "jpn")


def _zipf_pool(chars: str, rare: str) -> list[str]:
    """A weighted pool: the i-th common character appears ~1/(i+1) as often as the first; rare ones once."""
    pool: list[str] = []
    for i, ch in enumerate(chars):
        pool.extend(ch * max(1, 400 // (i + 1)))
    pool.extend(rare)
    return pool


HAN_POOL = _zipf_pool(HAN_COMMON, HAN_RARE)


def _isbn13(stem12: str) -> str:
    total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(stem12))
    return stem12 + str((10 - total % 10) % 10)


class Book:
    """The deterministic description of book ``n``: every library holding it describes it alike."""

    __slots__ = ("author", "clc", "isbn", "lang", "n", "place", "publisher", "subjects", "title", "year")

    def __init__(self, n: int) -> None:
        rng = random.Random(n * 7919 + 1)
        self.n = n
        self.lang = rng.choice(LANGS)
        if self.lang == "chi":
            self.title = "".join(rng.choice(HAN_POOL) for _ in range(rng.randint(3, 14)))
            self.author = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.randint(1, 2)))
        else:
            self.title = " ".join(rng.choice(LATIN) for _ in range(rng.randint(2, 7))).capitalize()
            self.author = rng.choice(LATIN_NAMES)
        self.year = 1950 + rng.randrange(75)
        self.isbn = _isbn13(f"9787{n % 100_000_000:08d}")
        self.publisher = rng.choice(PUBLISHERS)
        self.place = rng.choice(PLACES)
        self.clc = rng.choice(CLC)
        self.subjects = tuple(rng.sample(SUBJECTS, rng.randint(1, 2)))


def marc21_record(lib: str, b: Book, copies: int, note: int = 0) -> bytes:
    cn = f"{lib}{b.n:09d}"
    f: list = [
        ("001", cn),
        ("005", "20240115103000.0"),
        ("008", f"240115s{b.year}    cc " + " " * 17 + f"{b.lang} d"),
        ("020", "  ", [("a", b.isbn)]),
        ("084", "  ", [("a", b.clc), ("2", "clc")]),
        ("100", "1 ", [("a", b.author + ","), ("e", "author.")]),
        ("245", "10", [("a", b.title + " /"), ("c", b.author + ".")]),
        ("264", " 1", [("a", b.place + " :"), ("b", b.publisher + ","), ("c", f"{b.year}.")]),
        ("300", "  ", [("a", f"{100 + b.n % 400} p. ;"), ("c", "21 cm.")]),
    ]
    if note:
        f.append(("520", "  ", [("a", (f"Summary {b.n}. " * (note // 11 + 1))[:note])]))
    for s in b.subjects:
        f.append(("650", " 0", [("a", s), ("z", "China")]))
    for c in range(copies):
        status = [("7", "0")] if (b.n + c) % 7 else [("q", "2024-03-01")]
        f.append(("952", "  ", [("a", lib), ("o", f"{b.clc}/{c + 1}"), ("p", f"B{cn}{c}"), ("y", "BOOK"), *status]))
    return iso2709(MarcSpec(LEADER_MARC21, tuple(f)))


def cnmarc_record(lib: str, b: Book, copies: int) -> bytes:
    cn = f"{lib}{b.n:09d}"
    f: list = [
        ("001", cn),
        ("005", "20240115103000.0"),
        ("010", "  ", [("a", b.isbn), ("d", "CNY59.70")]),
        ("100", "  ", [("a", f"20240115d{b.year}    km y0chiy50      ea")]),
        ("101", "0 ", [("a", b.lang)]),
        ("200", "1 ", [("a", b.title), ("f", b.author + "著")]),
        ("210", "  ", [("a", b.place), ("c", b.publisher), ("d", str(b.year))]),
        ("215", "  ", [("a", f"{100 + b.n % 400}页"), ("d", "21cm")]),
    ]
    for s in b.subjects:
        f.append(("606", "0 ", [("a", s), ("y", "中国")]))
    f.append(("690", "  ", [("a", b.clc), ("v", "5")]))
    f.append(("701", " 0", [("a", b.author), ("4", "著")]))
    for c in range(copies):
        f.append(("905", "  ", [("a", lib), ("b", f"{cn}{c}"), ("c", "中文书库"), ("d", b.clc), ("e", str(c + 1))]))
    return iso2709(MarcSpec(LEADER_UNIMARC, tuple(f)))


# library, dialect, holdings preset, book ranges as fractions of N (records total ≈ N)
LAYOUT = (
    ("CQL", "marc21", "marc21_952", ((0.00, 0.40),)),
    ("CDL", "unimarc", "cnmarc_905", ((0.25, 0.55),)),
    ("SCL", "marc21", "marc21_952", ((0.10, 0.25), (0.55, 0.70))),
)


def corpus(directory: Path, n: int) -> list[tuple[str, str, str, Path, int]]:
    """(library, dialect, holdings, path, records) per file; generated once and cached."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for lib, dialect, holdings, ranges in LAYOUT:
        path = directory / f"{lib}-{dialect}-{n}.mrc"
        books = [k for lo, hi in ranges for k in range(int(lo * n), int(hi * n))]
        if not path.exists():
            t = time.perf_counter()
            tmp = path.with_suffix(".tmp")
            with open(tmp, "wb") as fh:
                for k in books:
                    b = Book(k)
                    copies = 1 + k % 3
                    fh.write(marc21_record(lib, b, copies) if dialect == "marc21" else cnmarc_record(lib, b, copies))
            tmp.replace(path)
            print(f"  generated {path.name}: {len(books):,} records in {time.perf_counter() - t:.1f}s", flush=True)
        out.append((lib, dialect, holdings, path, len(books)))
    return out


# --------------------------------------------------------------------------- baselines


def bare_pymarc(files: list[tuple[str, str, str, Path, int]]) -> tuple[int, float]:
    import pymarc

    gc.collect()
    n = 0
    t = time.perf_counter()
    for _lib, dialect, _h, path, _ in files:
        with open(path, "rb") as fh:
            for rec in pymarc.MARCReader(fh, to_unicode=True, force_utf8=dialect == "unimarc"):
                if rec is not None:
                    n += 1
    return n, time.perf_counter() - t


def parse_and_map(files: list[tuple[str, str, str, Path, int]]) -> tuple[int, float]:
    """Our reader + mapping + the ISO 2709 serialisation kept for export: the CPU floor of the ingest."""
    from library.catalog.tasks import IngestReport, _parsed

    gc.collect()
    n = 0
    t = time.perf_counter()
    for lib, _d, holdings, path, _ in files:
        for _ in _parsed(path, lib, "auto", "auto", holdings, IngestReport()):
            n += 1
    return n, time.perf_counter() - t


# --------------------------------------------------------------------------- the end-to-end run


def _rss_of(pid: int | str) -> int:
    """Resident set size of a process now, bytes (Linux /proc; 0 when it is gone)."""
    return _memory_of(pid).get("VmRSS", 0)


def _memory_of(pid: int | str) -> dict[str, int]:
    """VmRSS and its parts now, bytes: RssAnon (the process's own heap: Python objects, tantivy's writer buffers)
    and RssFile (pages of mapped files: the index's segments, shared with the page cache). Empty when gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "RssAnon", "RssFile"):
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


class RssSampler:
    """Peak resident set size, sampled every 0.2 s from /proc: of this process (together with getrusage's
    high-water mark) and, separately, of the largest child process alive meanwhile (the parse worker)."""

    def __init__(self) -> None:
        self.peak = 0
        self.anon_peak = 0  # RssAnon: the process's own memory
        self.file_peak = 0  # RssFile: mapped files (the index's segments)
        self.child_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.wait(0.2):
            now = _memory_of("self")
            self.peak = max(self.peak, now.get("VmRSS", 0))
            self.anon_peak = max(self.anon_peak, now.get("RssAnon", 0))
            self.file_peak = max(self.file_peak, now.get("RssFile", 0))
            for child in children(me):
                self.child_peak = max(self.child_peak, _rss_of(child))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @staticmethod
    def maxrss() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


async def setup(workdir: Path):  # noqa: ANN201
    from federation.extensions import build_services
    from federation.members import service as members
    from federation.migrate import upgrade
    from federation.settings import load_settings
    from library.catalog.service import ensure_index

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)  # noqa: ASYNC240 - a benchmark's setup
    settings = load_settings(env="test", data_dir=workdir / "var", log_json=False, log_level="WARNING")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(upgrade, settings.effective_database_url)
    svc = build_services(settings)
    async with svc.db.uow() as uow:
        for code, city in (("CQL", "重庆"), ("CDL", "成都"), ("SCL", "成都")):
            await members.upsert(uow, members.NewInstitution(code, f"{code} library", "library", None, city))
        await uow.commit()
    await ensure_index(svc)
    return svc


async def ingest_all(svc, files) -> list:  # noqa: ANN001
    from library.catalog import indexing
    from library.catalog.tasks import ingest_file

    reports = []
    for lib, _dialect, holdings, path, _ in files:
        rep = await ingest_file(svc, path, library=lib, holdings=holdings, actor="bench")
        reports.append(rep)
    await svc.search.refresh(indexing.INDEX)
    return reports


async def verify(svc, files) -> dict:  # noqa: ANN001
    """Engine count == works with a live record; sample searches; counts in the database."""
    from sqlalchemy import func, select

    from library.catalog import indexing, service
    from library.catalog.models import BibRecordRow, ItemRow, Work

    async with svc.db.reader() as s:
        works = (
            await s.execute(
                select(func.count(func.distinct(BibRecordRow.work_id))).where(BibRecordRow.deleted.is_(False))
            )
        ).scalar_one()
        all_works = (await s.execute(select(func.count()).select_from(Work))).scalar_one()
        records = (await s.execute(select(func.count()).select_from(BibRecordRow))).scalar_one()
        items = (await s.execute(select(func.count()).select_from(ItemRow))).scalar_one()
    indexed = await svc.search.count(indexing.INDEX)
    misses = []
    total = sum(f[4] for f in files)
    for k in random.Random(5).sample(range(int(0.70 * total)), 200):
        b = Book(k)
        res = await service.search(svc, service.SearchRequest(q=f"isbn:{b.isbn}", facets=()))
        if res.total != 1:
            misses.append((k, b.isbn, res.total))
            continue
        title = b.title.split()[0] if b.lang != "chi" else b.title[:2]
        hit = await service.search(svc, service.SearchRequest(q=f'title:"{b.title}" isbn:{b.isbn}', facets=()))
        if hit.total != 1:
            misses.append((k, title, hit.total))
    return {
        "works": works,
        "all_works": all_works,
        "records": records,
        "items": items,
        "indexed": indexed,
        "misses": misses,
    }


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished children: the parse workers, each waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def report_line(label: str, n: int, seconds: float) -> str:
    return f"  {label:<44s} {n:>9,} records {seconds:8.2f} s {n / seconds:>10,.0f} records/s"


async def main_e2e(args: argparse.Namespace) -> None:
    files = corpus(Path(args.dir), args.records)
    total = sum(f[4] for f in files)
    print(
        f"corpus: {total:,} records in {len(files)} files "
        f"({sum(f[3].stat().st_size for f in files) / 1e6:.0f} MB); load average {os.getloadavg()[0]:.2f}"
    )

    n_bare, t_bare = bare_pymarc(files)
    print(report_line("bare pymarc.MARCReader (baseline)", n_bare, t_bare), flush=True)
    if not args.skip_parse:
        n_ours, t_ours = parse_and_map(files)
        print(report_line("our read + to_bib + as_marc (no DB, no index)", n_ours, t_ours), flush=True)

    svc = await setup(Path(args.dir) / "run")
    try:
        prof = cProfile.Profile() if args.profile else None
        gc.collect()
        cpu0, workers0 = time.process_time(), _children_cpu()
        t0 = time.perf_counter()
        with RssSampler() as rss:
            if prof:
                prof.enable()
            reports = await ingest_all(svc, files)
            if prof:
                prof.disable()
        elapsed = time.perf_counter() - t0
        cpu, workers_cpu = time.process_time() - cpu0, _children_cpu() - workers0
        if prof:
            prof.dump_stats(args.profile)
        seen = sum(r.seen for r in reports)
        print(report_line("END TO END: file → SQLite → tantivy, refreshed", seen, elapsed))
        print(
            f"  CPU for {elapsed:.1f} s wall: the loading process {cpu:.1f} s ({cpu / elapsed:.0%} of a core; its "
            f"Python threads take turns on one interpreter lock), parse workers {workers_cpu:.1f} s "
            f"({workers_cpu / elapsed:.0%} of a core); {os.cpu_count()} cores"
        )
        for (lib, dialect, *_), r in zip(files, reports, strict=True):
            d = r.as_dict()
            print(
                f"    {lib} {dialect:8s} added {d['added']:,} updated {d['updated']:,} unchanged "
                f"{d['unchanged']:,} rejected {d['rejected']:,}  {d['records_per_second']:,.0f} records/s"
            )
        ratio = (seen / elapsed) / (n_bare / t_bare)
        print(
            f"  end-to-end / bare pymarc = {ratio:.0%} (goal >= 40%), end-to-end {seen / elapsed:,.0f} records/s "
            f"(goal >= 3,000)"
        )
        print(
            f"  peak RSS {rss.peak / 2**20:.0f} MB (sampled peaks: own memory {rss.anon_peak / 2**20:.0f} MB, mapped "
            f"files {rss.file_peak / 2**20:.0f} MB); parse worker process {rss.child_peak / 2**20:.0f} MB (sampled)"
        )
        v = await verify(svc, files)
        print(
            f"  check: {v['records']:,} records, {v['items']:,} items, {v['works']:,} works with live records; "
            f"engine holds {v['indexed']:,} documents -> {'OK' if v['indexed'] == v['works'] else 'MISMATCH'}; "
            f"200 sampled books found by ISBN and title: {'OK' if not v['misses'] else v['misses'][:5]}"
        )
        if args.reload:
            from library.catalog import indexing

            lib, _d, holdings, path, n = files[0]
            t = time.perf_counter()
            from library.catalog.tasks import ingest_file

            rep = await ingest_file(svc, path, library=lib, holdings=holdings, actor="bench")
            await svc.search.refresh(indexing.INDEX)
            el = time.perf_counter() - t
            d = rep.as_dict()
            same = d["added"] == d["updated"] == 0 and await svc.search.count(indexing.INDEX) == v["indexed"]
            print(
                report_line(f"reload {lib} (unchanged: {d['unchanged']:,})", rep.seen, el)
                + ("  changes nothing: OK" if same else f"  CHANGED: {d}")
            )
    finally:
        await svc.close()


async def main_rss(args: argparse.Namespace) -> None:
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - a benchmark's setup
    path = directory / "rss-1g.mrc"
    count = 108_000
    if not path.exists():
        t = time.perf_counter()
        with open(path.with_suffix(".tmp"), "wb") as fh:  # noqa: ASYNC230 - generated before the clock starts
            for k in range(count):
                fh.write(marc21_record("CQL", Book(k), 1 + k % 3, note=9_000))
        path.with_suffix(".tmp").replace(path)
        print(f"generated {path.name} in {time.perf_counter() - t:.0f}s")
    size = path.stat().st_size
    files = [("CQL", "marc21", "marc21_952", path, count)]
    svc = await setup(directory / "rss-run")
    before = RssSampler.maxrss()
    try:
        t0 = time.perf_counter()
        with RssSampler() as rss:
            reports = await ingest_all(svc, files)
        el = time.perf_counter() - t0
        from library.catalog import indexing

        indexed = await svc.search.count(indexing.INDEX)
        after = rss.maxrss()
        print(
            f"{size / 1e9:.2f} GB, {reports[0].seen:,} records in {el:.0f}s ({reports[0].seen / el:,.0f} records/s),"
            f" {indexed:,} documents indexed"
        )
        if after > before:  # the ingest raised the process's high-water mark: that mark is its exact peak
            peak, how = after, "the process's high-water mark, set during the ingest"
        else:  # the mark was set earlier (generating the file, imports): the samples bound the ingest from below
            peak, how = rss.peak, f"sampled every 0.2 s; the high-water mark {after / 2**20:.0f} MB was set before"
        print(f"peak RSS of the loading process {peak / 2**20:.0f} MB (goal < 500 MB; {how})")
        print(
            f"  of which, sampled peaks: own memory (RssAnon) {rss.anon_peak / 2**20:.0f} MB, mapped files (RssFile: "
            f"the index's segments, the database) {rss.file_peak / 2**20:.0f} MB"
        )
        print(f"the parse worker process (a separate process) peaked at {rss.child_peak / 2**20:.0f} MB (sampled)")
    finally:
        await svc.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=200_000, help="records in the three files together")
    ap.add_argument("--dir", default="/var/tmp/twc-bench/ingest", help="where files, database and index go")
    ap.add_argument("--rss", action="store_true", help="ingest a ~1 GB file end to end and print the peak RSS")
    ap.add_argument("--profile", help="write a cProfile of the end-to-end run to this file")
    ap.add_argument("--skip-parse", action="store_true", help="skip the parse+map-only measurement")
    ap.add_argument("--no-reload", dest="reload", action="store_false", help="skip the reload check")
    args = ap.parse_args()
    if args.records < 3_000:
        ap.error("--records: at least 3,000")
    asyncio.run(main_rss(args) if args.rss else main_e2e(args))


if __name__ == "__main__":
    main()
