"""Work clustering: records for the same book in different libraries become one work.

ISBN first (any shared ISBN-13), then a normalised key of title, first author
and year. A record an administrator split off is pinned to its work and stays
there on every reload.
"""

from __future__ import annotations

import re

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncSession

from federation.db import new_id, utcnow
from library.catalog.errors import RecordNotFound
from library.catalog.models import BibRecordRow, ClusterLog, ItemRow, Work
from library.catalog.records import BibRecord
from search.analysis import normalise

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def _squash(text: str | None) -> str:
    return _NON_WORD.sub("", normalise(text or ""))[:120]


def match_key(bib: BibRecord) -> str:
    """``title|author|year``, normalised (traditional→simplified, case and accents folded, punctuation gone)."""
    return f"{_squash(bib.title)}|{_squash(bib.first_author)}|{bib.year or ''}"


async def split(session: AsyncSession, record_id: str, actor: str, reason: str) -> tuple[str, str]:
    """Move a record into a new work of its own and pin it there; returns (old work id, new work id)."""
    from library.catalog.store import from_json  # the store clusters with match_key: import it late

    row = await session.get(BibRecordRow, record_id)
    if row is None:
        raise RecordNotFound(f"no record {record_id}")
    bib = from_json(row.data)
    old_work = row.work_id
    new_work = new_id()
    now = utcnow()
    # the new work's key is made unique so later records cluster by ISBN or key into the old work, not here
    await session.execute(
        insert(Work).values(
            id=new_work,
            title=bib.title[:500],
            first_author=bib.first_author,
            year=bib.year,
            match_key=f"split:{new_work}",
            created_at=now,
            updated_at=now,
        )
    )
    row.work_id = new_work
    row.pinned = True
    await session.execute(update(ItemRow).where(ItemRow.record_id == row.id).values(work_id=new_work))
    # ISBNs stay pointing at the old work: other libraries' copies still belong there
    session.add(
        ClusterLog(work_id=new_work, record_id=row.id, action="split", reason=reason[:300], actor=actor, at=now)
    )
    await session.flush()
    return old_work, new_work
