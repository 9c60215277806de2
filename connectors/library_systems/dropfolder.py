"""A member library's drop folder of MARC files (connector option ``drop_folder``), loaded by a periodic job.

A file is taken when it is complete: a ``NAME.done`` marker beside it, or the same size and modification time in
two consecutive scans of this process. It is claimed by renaming it into ``processing/`` (one scanner wins the
rename, so two workers never load it both), loaded through the catalogue ingest (``ingest_file``, idempotent), and
moved to ``processed/`` or ``failed/`` with ``NAME.report.json`` beside it. The SHA-256 of every loaded file is kept
in ``processed/.loaded``: the same bytes dropped again are moved to ``processed/`` without a second load. A file
left in ``processing/`` by a worker that died is loaded again after ``drop_stale_s`` (the ingest is idempotent).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from connectors.framework.service import LoadedConnector
from connectors.library_systems.errors import BadDropFolder
from connectors.library_systems.service import HarvestOptions
from federation.services import Services
from library.catalog.tasks import ingest_file

log = logging.getLogger(__name__)
SIZES_KEY = "connectors.library_systems.drop_sizes"
SKIPPED_SUFFIXES = (".done", ".part", ".tmp", ".report.json")
STALE_S = 3600.0


def folder_of(connector: LoadedConnector) -> Path | None:
    raw = connector.config.options.get("drop_folder")
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw:
        raise BadDropFolder(f"connector {connector.name}: option drop_folder must be a folder path")
    path = Path(raw)
    if not path.is_dir():
        raise BadDropFolder(f"connector {connector.name}: the drop folder does not exist")
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def _free_name(directory: Path, name: str) -> Path:
    target = directory / name
    if not target.exists():
        return target
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    return directory / f"{name}.{stamp}"


def _candidates(folder: Path, sizes: dict[str, tuple[int, float]], now: float, stale_s: float) -> list[Path]:
    """Complete files of the folder (and stale claims in ``processing/``), in name order; updates ``sizes``."""
    ready = []
    seen = set()
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.name.endswith(SKIPPED_SUFFIXES):
            continue
        stat = path.stat()
        seen.add(path.name)
        now_size = (stat.st_size, stat.st_mtime)
        marker = path.with_name(path.name + ".done")
        if marker.exists() or sizes.get(path.name) == now_size:
            ready.append(path)
        else:
            sizes[path.name] = now_size
    for name in set(sizes) - seen:
        sizes.pop(name, None)
    claims = folder / "processing"
    if claims.is_dir():
        for path in sorted(claims.iterdir()):
            if path.is_file() and now - path.stat().st_mtime >= stale_s:
                ready.append(path)
    return ready


def _claim(path: Path, folder: Path) -> Path | None:
    claims = folder / "processing"
    if path.parent == claims:
        os.utime(path)  # a stale claim: ours now
        return path
    claims.mkdir(exist_ok=True)
    target = claims / path.name
    try:
        os.rename(path, target)  # atomic within one file system: one scanner wins
    except FileNotFoundError:
        return None
    os.utime(target)
    path.with_name(path.name + ".done").unlink(missing_ok=True)
    return target


def _finish(claimed: Path, folder: Path, outcome: str, report: dict[str, Any], digest: str | None) -> Path:
    directory = folder / outcome
    directory.mkdir(exist_ok=True)
    target = _free_name(directory, claimed.name)
    os.rename(claimed, target)
    (directory / f"{target.name}.report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2))
    if outcome == "processed" and digest is not None and not report.get("duplicate_of"):
        with (directory / ".loaded").open("a") as ledger:
            ledger.write(f"{digest} {target.name}\n")
    return target


def _loaded_before(folder: Path, digest: str) -> str | None:
    ledger = folder / "processed" / ".loaded"
    if not ledger.exists():
        return None
    for line in ledger.read_text().splitlines():
        known, _, name = line.partition(" ")
        if known == digest:
            return name
    return None


async def scan(svc: Services, connector: LoadedConnector, *, actor: str) -> dict[str, int]:
    """One scan of the connector's drop folder: loads every complete file; the counts of what became of them."""
    folder = folder_of(connector)
    counts = {"processed": 0, "failed": 0, "duplicates": 0, "waiting": 0}
    if folder is None:
        return counts
    options = HarvestOptions.of(connector.config.options)
    stale_s = float(connector.config.options.get("drop_stale_s", STALE_S))
    sizes = svc.extras.setdefault(SIZES_KEY, {}).setdefault(connector.name, {})
    ready = await asyncio.to_thread(_candidates, folder, sizes, time.time(), stale_s)
    counts["waiting"] = len(sizes) - sum(1 for p in ready if p.name in sizes)
    for path in ready:
        claimed = await asyncio.to_thread(_claim, path, folder)
        if claimed is None:
            continue
        sizes.pop(path.name, None)
        digest = await asyncio.to_thread(_sha256, claimed)
        earlier = await asyncio.to_thread(_loaded_before, folder, digest)
        if earlier is not None:
            await asyncio.to_thread(_finish, claimed, folder, "processed", {"duplicate_of": earlier}, digest)
            counts["duplicates"] += 1
            continue
        outcome, report = await _load(svc, claimed, connector, options, actor)
        await asyncio.to_thread(_finish, claimed, folder, outcome, report, digest)
        counts[outcome] += 1
        log.info("library %s: drop file %s %s", connector.member_code, claimed.name, outcome)
    return counts


async def _load(
    svc: Services, path: Path, connector: LoadedConnector, options: HarvestOptions, actor: str
) -> tuple[str, dict[str, Any]]:
    fmt = connector.config.options.get("drop_format", "auto")
    try:
        report = await ingest_file(
            svc, path, library=connector.member_code, fmt=fmt, holdings=options.holdings, actor=actor
        )
    except Exception as e:  # noqa: BLE001 - the file goes to failed/ with the reason; the next file is loaded
        return "failed", {"error": f"{e.__class__.__name__}: {str(e)[:300]}"}
    data = report.as_dict()
    stored = report.added + report.updated + report.unchanged
    return ("processed" if stored else "failed"), data
