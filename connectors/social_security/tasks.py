"""The card status feed as a sync job: each contiguous batch of events is applied to credentials and committed
with the watermark (the last applied sequence number) in one unit of work.

Scheduled every ``SCHEDULE_S`` seconds in the embedded runner, so a card reported lost stops opening loans
within about half a minute.
"""

from __future__ import annotations

from connectors.framework.service import ConnectorKind, register_kind
from connectors.framework.sync import SyncRun
from connectors.social_security import service
from connectors.social_security.adapter import HttpSocialSecurity
from federation.services import Services

SCHEDULE_S = 20.0


async def sync(run: SyncRun) -> None:
    port = HttpSocialSecurity(run.client)
    after = int(run.watermark or 0)
    limit = run.connector.config.page_size
    while True:
        page = await port.card_events(after, limit)  # no unit of work is open across the call
        batch, counts = service.next_batch(page.events, after)
        run.counts["duplicates"] += counts["duplicates"]
        run.counts["already_applied"] += counts["already_applied"]
        if not batch:
            if counts["waiting"]:
                run.counts["waiting_for_gap"] = counts["waiting"]  # the missing event comes in a later run
            return
        async with run.svc.db.uow() as uow:
            for event in batch:
                run.counts[await service.apply_event(uow, run.svc, event, actor=run.actor)] += 1
            await run.commit(uow, str(batch[-1].seq))
        after = batch[-1].seq
        if counts["waiting"]:
            run.counts["waiting_for_gap"] = counts["waiting"]
            return


KIND = ConnectorKind(
    "social_security",
    "social-security card systems (社保): card verification, card status events, residents' summaries",
    sync=sync,
    schedule_s=SCHEDULE_S,
)


def register(svc: Services) -> None:
    register_kind(svc, KIND)
