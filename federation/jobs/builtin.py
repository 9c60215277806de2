"""Job kinds of the core: maintenance work an administrator can start and watch."""

from __future__ import annotations

from typing import Any

from federation.audit.service import verify
from federation.jobs.service import JobContext
from federation.services import Services


async def audit_verify(svc: Services, ctx: JobContext) -> dict[str, Any]:
    async with svc.db.reader() as s:
        result = await verify(s, svc.audit_key)
    await ctx.progress(result.checked, result.checked)
    return {
        "ok": result.ok,
        "checked": result.checked,
        "first_broken_seq": result.first_broken_seq,
        "reason": result.reason,
        "chain": result.chain,
        "heads": [{"chain": h.chain, "link": h.link, "hash": h.hash} for h in result.heads],
    }


def register(svc: Services) -> None:
    svc.job_handler("audit.verify", audit_verify)
