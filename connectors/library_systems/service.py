"""Harvested records into the catalogue: live MARCXML records through the catalogue's own mapping and store, deleted
ones withdrawn the way a MARC record with leader/05 ``d`` withdraws them (the stored record marked deleted, its
items removed), all in the caller's unit of work so the watermark commits with them.

The watermark is an OAI datestamp in the repository's granularity. ``from`` is inclusive, so a re-run from a
watermark fetches again the records stamped with it and finds them unchanged; nothing is skipped when a page ends
in the middle of records sharing one datestamp.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select

from connectors.framework.errors import InvalidConnector
from connectors.library_systems.schemas import OaiRecord, marc_collection
from federation.db import UnitOfWork
from library.catalog import marc
from library.catalog.holdings import PRESETS, HoldingsConfig
from library.catalog.mapping import to_bib
from library.catalog.models import BibRecordRow
from library.catalog.store import Incoming, from_json, store_batch
from library.catalog.tasks import WORKS_CHANGED

log = logging.getLogger(__name__)
PREFIXES = ("marcxml", "marc21")


@dataclasses.dataclass(frozen=True)
class HarvestOptions:
    """The connector's ``options`` for a library: what to ask for and how to read the holdings."""

    metadata_prefix: str = "marcxml"
    oai_set: str | None = None
    holdings: str | None = "marc21_852"
    ordered: bool = True  # the repository lists records in datestamp order (per-page watermarks are then safe)
    harvest: bool = True  # False: a drop-folder-only library

    @classmethod
    def of(cls, options: Mapping[str, Any]) -> HarvestOptions:
        prefix = options.get("metadata_prefix", "marcxml")
        holdings = options.get("holdings", "marc21_852")
        if prefix not in PREFIXES:
            raise InvalidConnector(f"option metadata_prefix must be one of {', '.join(PREFIXES)}")
        if holdings is not None and holdings not in PRESETS:
            raise InvalidConnector(f"option holdings must be one of {', '.join(sorted(PRESETS))}")
        oai_set = options.get("set")
        if oai_set is not None and not isinstance(oai_set, str):
            raise InvalidConnector("option set must be a setSpec")
        return cls(prefix, oai_set, holdings, bool(options.get("ordered", True)), bool(options.get("harvest", True)))

    @property
    def holdings_config(self) -> HoldingsConfig | None:
        return PRESETS[self.holdings] if self.holdings else None


def latest(records: Sequence[OaiRecord]) -> list[OaiRecord]:
    """One record per identifier, the latest datestamp (the later one of equals): a repeated record counts once."""
    best: dict[str, OaiRecord] = {}
    for r in records:
        old = best.get(r.identifier)
        if old is None or r.datestamp >= old.datestamp:
            best[r.identifier] = r
    return list(best.values())


def max_datestamp(current: str | None, records: Sequence[OaiRecord]) -> str | None:
    """Datestamps of one granularity compare as strings."""
    stamps = [r.datestamp for r in records]
    if current:
        stamps.append(current)
    return max(stamps) if stamps else None


def _incoming(
    records: Sequence[OaiRecord], library: str, holdings: HoldingsConfig | None, counts: Any
) -> list[Incoming]:
    live = [r for r in records if not r.deleted and r.marc is not None]
    out: list[Incoming] = []
    if not live:
        return out
    for entry in marc.read(marc_collection([r.marc for r in live if r.marc]), format="marcxml", library=library):
        if isinstance(entry, marc.Rejection):
            counts["rejected"] += 1
            log.warning("library %s: a harvested record is unusable: %s", library, entry.reason)
            continue
        try:
            bib = to_bib(entry, holdings=holdings, library=library)
        except Exception as e:  # noqa: BLE001 - one unmappable record is counted, the page goes on
            counts["rejected"] += 1
            log.warning("library %s: a harvested record cannot be mapped: %s", library, e)
            continue
        if not bib.control_number:
            counts["rejected"] += 1
            continue
        try:
            raw = marc.utf8_iso2709(entry)
        except Exception:  # noqa: BLE001 - kept searchable without its MARC bytes, as the file ingest does
            raw = None
        out.append(Incoming(bib, raw))
    return out


@dataclasses.dataclass
class PreparedPage:
    """A page read and mapped, before any database work: what to store, what to withdraw, what was refused."""

    incoming: list[Incoming]
    withdrawn: list[str]  # control numbers of deleted records
    counts: collections.Counter[str]


def prepare_page(records: Sequence[OaiRecord], *, library: str, options: HarvestOptions) -> PreparedPage:
    """Parse and map a page with no unit of work open (it is CPU work; SQLite has one writer)."""
    counts: collections.Counter[str] = collections.Counter()
    unique = latest(records)
    counts["duplicates"] += len(records) - len(unique)
    incoming = _incoming(unique, library.upper(), options.holdings_config, counts)
    return PreparedPage(incoming, sorted({r.local_id for r in unique if r.deleted}), counts)


async def _withdrawals(uow: UnitOfWork, numbers: Sequence[str], library: str, counts: Any) -> list[Incoming]:
    if not numbers:
        return []
    rows = (
        await uow.session.execute(
            select(BibRecordRow.control_number, BibRecordRow.data, BibRecordRow.marc, BibRecordRow.deleted).where(
                BibRecordRow.library == library, BibRecordRow.control_number.in_(numbers)
            )
        )
    ).all()
    found = {row.control_number: row for row in rows}
    counts["deleted_unknown"] += len(set(numbers) - set(found))
    out = []
    for number in sorted(set(numbers) & set(found)):
        row = found[number]
        if row.deleted:
            counts["already_deleted"] += 1
            continue
        bib = dataclasses.replace(from_json(row.data), deleted=True, version=None)
        out.append(Incoming(bib, row.marc))
    return out


async def apply_page(uow: UnitOfWork, page: PreparedPage, *, library: str, actor: str) -> collections.Counter[str]:
    """Store a prepared page in ``uow`` (not committed here); its counts."""
    counts = collections.Counter(page.counts)
    library = library.upper()
    batch = page.incoming + await _withdrawals(uow, page.withdrawn, library, counts)
    if not batch:
        return counts
    result = await store_batch(uow.session, library, batch, actor=actor)
    counts["added"] += result.added
    counts["updated"] += result.updated
    counts["withdrawn"] += result.deleted  # among the added and updated
    counts["unchanged"] += result.unchanged
    if result.works:
        uow.emit(WORKS_CHANGED, work_ids=sorted(result.works))
    return counts
