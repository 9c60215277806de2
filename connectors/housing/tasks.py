"""The public-rental applications' feed as a sync job: each contiguous batch of reports is upserted and committed
with the watermark (the last applied sequence number) in one unit of work."""

from __future__ import annotations

from connectors.framework.feed import contiguous
from connectors.framework.service import ConnectorKind, register_kind
from connectors.framework.sync import SyncRun
from connectors.housing import service
from connectors.housing.adapter import HttpHousing
from connectors.housing.models import DepositCertificate
from federation.identity import rekey
from federation.services import Services
from federation.settings import Environment

SCHEDULE_S = 300.0


async def sync(run: SyncRun) -> None:
    port = HttpHousing(run.client)
    after = int(run.watermark or 0)
    limit = run.connector.config.page_size
    while True:
        page = await port.rental_changes(after, limit)  # no unit of work is open across the call
        batch, counts = contiguous(page.changes, after)
        run.counts["duplicates"] += counts["duplicates"]
        run.counts["already_applied"] += counts["already_applied"]
        if not batch:
            if counts["waiting"]:
                run.counts["waiting_for_gap"] = counts["waiting"]
            return
        async with run.svc.db.uow() as uow:
            for change in batch:
                outcome = await service.apply_rental_change(uow, run.svc, run.connector.name, change, actor=run.actor)
                run.counts[outcome] += 1
            await run.commit(uow, str(batch[-1].seq))
        after = batch[-1].seq
        if counts["waiting"]:
            run.counts["waiting_for_gap"] = counts["waiting"]
            return


KIND = ConnectorKind(
    "housing",
    "provident-fund centres (公积金) and public-rental housing (公租房): accounts, deposits, applications, credit",
    sync=sync,
    schedule_s=SCHEDULE_S,
)


def register(svc: Services) -> None:
    register_kind(svc, KIND)
    rekey.declare(svc, DepositCertificate.document_enc, (DepositCertificate.id,), service.certificate_context)
    if svc.settings.env is Environment.PRODUCTION:
        service.signing_key(svc)  # read now: missing, production stops at its start, not at a resident's first use
