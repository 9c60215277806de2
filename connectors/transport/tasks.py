"""The operators' pass and trip-count feed as a sync job: each contiguous batch of updates is upserted and
committed with the watermark (the last applied sequence number) in one unit of work."""

from __future__ import annotations

from connectors.framework.feed import contiguous
from connectors.framework.service import ConnectorKind, register_kind
from connectors.framework.sync import SyncRun
from connectors.transport import service
from connectors.transport.adapter import HttpTransport
from federation.services import Services

SCHEDULE_S = 600.0


async def sync(run: SyncRun) -> None:
    port = HttpTransport(run.client)
    after = int(run.watermark or 0)
    limit = run.connector.config.page_size
    while True:
        page = await port.updates(after, limit)  # no unit of work is open across the call
        batch, counts = contiguous(page.updates, after)
        run.counts["duplicates"] += counts["duplicates"]
        run.counts["already_applied"] += counts["already_applied"]
        if not batch:
            if counts["waiting"]:
                run.counts["waiting_for_gap"] = counts["waiting"]
            return
        async with run.svc.db.uow() as uow:
            for update in batch:
                run.counts[await service.apply_update(uow, run.svc, run.connector, update, actor=run.actor)] += 1
            await run.commit(uow, str(batch[-1].seq))
        after = batch[-1].seq
        if counts["waiting"]:
            run.counts["waiting_for_gap"] = counts["waiting"]
            return


KIND = ConnectorKind(
    "transport",
    "transit card operators (交通一卡通): card checks, commuter passes, monthly trip counts (summaries only)",
    sync=sync,
    schedule_s=SCHEDULE_S,
)


def register(svc: Services) -> None:
    register_kind(svc, KIND)
