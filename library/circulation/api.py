"""Circulation over HTTP: checkouts and check-ins at any member library's desk, transits, renewals, my loans.

Every write takes an optional ``Idempotency-Key`` header (see ``idempotency``). Credentials travel in bodies,
never in URLs.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from aiohttp import web
from pydantic import Field

from federation.app import principal, services
from federation.db import utcnow
from federation.web.routing import RESIDENT, Principal, Routes, staff
from federation.web.schema import Input, Output
from library.circulation import errors, fines, idempotency, requests, service
from library.circulation.models import ItemState, Loan, Request

routes = Routes("circulation")

DESK = staff("librarian")
RENEW = staff("librarian") | RESIDENT


class CredentialIn(Input):
    type: Literal["social_security_card", "id_number", "library_card"]
    value: str = Field(min_length=1, max_length=64)
    institution: str = Field(
        default="",
        max_length=32,
        description="the issuing library, for a library_card; without it every member library's cards are searched",
    )


class CheckoutIn(Input):
    item_barcode: str = Field(min_length=1, max_length=64)
    credential: CredentialIn
    service_point: str = Field(min_length=1, max_length=40)
    item_library: str | None = Field(default=None, max_length=32, description="only when the barcode is ambiguous")


class CheckinIn(Input):
    item_barcode: str = Field(min_length=1, max_length=64)
    service_point: str = Field(min_length=1, max_length=40)
    item_library: str | None = Field(default=None, max_length=32)


class ReceiptIn(Input):
    service_point: str | None = Field(default=None, max_length=40, description="default: the transit's destination")


class TransitQuery(Input):
    service_point: str = Field(min_length=1, max_length=40)
    direction: Literal["incoming", "outgoing"] = "incoming"


class LoanOut(Output):
    id: str
    item_id: str
    barcode: str
    owner_library: str
    library: str
    reader_id: str
    state: str
    checkout_service_point: str
    checked_out_at: dt.datetime
    due_at: dt.datetime
    renewals: int
    returned_at: dt.datetime | None
    checkin_service_point: str | None
    title: str | None = None
    fine_so_far_fen: int | None = Field(
        default=None, description="in my loans: what the lending library would charge if it came back today"
    )


class ItemOut(Output):
    item_id: str
    barcode: str
    library: str
    status: str
    current_library: str | None
    current_service_point: str | None


class TransitOut(Output):
    id: str
    item_id: str
    barcode: str
    loan_id: str | None
    reason: str
    from_library: str
    from_service_point: str
    to_library: str
    to_service_point: str
    state: str
    created_at: dt.datetime
    received_at: dt.datetime | None
    received_service_point: str | None


class CheckinOut(Output):
    action: Literal["shelve", "transit", "hold_shelf"]
    destination: str
    loan: LoanOut | None
    transit: TransitOut | None
    item: ItemOut
    title: str | None = None


class ReceiptOut(Output):
    transit: TransitOut
    item: ItemOut


class TransitList(Output):
    items: list[TransitOut]


class LoanList(Output):
    items: list[LoanOut]


def loan_out(loan: Loan, title: str | None = None) -> LoanOut:
    out = LoanOut.model_validate(loan)
    out.title = title
    return out


def _staff(who: Principal) -> service.Staff:
    return service.Staff(actor=who.actor, library=who.institution)


@routes.post(
    "/api/v1/circulation/checkouts",
    access=DESK,
    body=CheckoutIn,
    response=LoanOut,
    status=201,
    summary="Lend a copy at a desk to a reader recognised by any credential (first use registers the reader)",
    errors=(403, 404, 409),
)
async def create_checkout(request: web.Request, body: CheckoutIn) -> web.Response:
    svc, who = services(request), principal(request)
    cmd = service.Checkout(
        item_barcode=body.item_barcode,
        credential=service.Credential(body.credential.type, body.credential.value, body.credential.institution),
        service_point=body.service_point,
        item_library=body.item_library,
    )

    async def work(uow):  # noqa: ANN001, ANN202
        lent = await requests.checkout(uow, svc, cmd, _staff(who))
        return loan_out(lent.loan, lent.title)

    return await idempotency.run(request, svc, who, body, work, 201)


@routes.post(
    "/api/v1/circulation/checkins",
    access=DESK,
    body=CheckinIn,
    response=CheckinOut,
    summary="Take a copy back (or pull one for a request) at any desk: shelve it, hold it, or send it on",
    errors=(403, 404, 409),
)
async def create_checkin(request: web.Request, body: CheckinIn) -> web.Response:
    svc, who = services(request), principal(request)
    cmd = service.Checkin(
        item_barcode=body.item_barcode, service_point=body.service_point, item_library=body.item_library
    )

    async def work(uow):  # noqa: ANN001, ANN202
        r = await requests.checkin(uow, svc, cmd, _staff(who))
        return CheckinOut(
            action=r.action,
            destination=r.destination,
            loan=loan_out(r.loan, r.title) if r.loan else None,
            transit=TransitOut.model_validate(r.transit) if r.transit else None,
            item=item_out(r.item),
            title=r.title,
        )

    return await idempotency.run(request, svc, who, body, work, 200)


def item_out(state: ItemState) -> ItemOut:
    return ItemOut.model_validate(state)


@routes.get(
    "/api/v1/circulation/transits",
    access=DESK,
    query=TransitQuery,
    response=TransitList,
    summary="Open transits arriving at or leaving from one of your library's service points",
    errors=(403, 404),
)
async def list_transits(request: web.Request, query: TransitQuery) -> TransitList:
    svc, who = services(request), principal(request)
    async with svc.db.reader() as s:
        at = await service.desk(s, query.service_point, _staff(who))
        rows = await service.transits_at(s, at, query.direction)
    return TransitList(items=[TransitOut.model_validate(t) for t in rows])


@routes.post(
    "/api/v1/circulation/transits/{transit_id}/receipt",
    access=DESK,
    body=ReceiptIn,
    response=ReceiptOut,
    summary="Receive a copy at its transit's destination library: it is available there",
    errors=(403, 404, 409),
)
async def receive_transit(request: web.Request, body: ReceiptIn) -> web.Response:
    svc, who = services(request), principal(request)
    cmd = service.Receipt(transit_id=request.match_info["transit_id"], service_point=body.service_point)

    async def work(uow):  # noqa: ANN001, ANN202
        transit, state = await requests.receive(uow, svc, cmd, _staff(who))
        return ReceiptOut(transit=TransitOut.model_validate(transit), item=item_out(state))

    return await idempotency.run(request, svc, who, body, work, 200)


@routes.post(
    "/api/v1/circulation/loans/{loan_id}/renewals",
    access=RENEW,
    response=LoanOut,
    summary="Renew a loan (staff: any loan; a resident: their own) within the lending library's renewals",
    errors=(404, 409),
)
async def renew_loan(request: web.Request) -> web.Response:
    svc, who = services(request), principal(request)
    # a resident sees only their own loans: any other id is "not found" (an account without a person owns none)
    person_id = (who.person_id or "") if who.kind == "resident" else None
    cmd = service.Renewal(loan_id=request.match_info["loan_id"], person_id=person_id)

    async def work(uow):  # noqa: ANN001, ANN202
        return loan_out(await requests.renew(uow, svc, cmd, _staff(who)))

    return await idempotency.run(request, svc, who, None, work, 200)


@routes.get("/api/v1/me/loans", access=RESIDENT, response=LoanList, summary="My active loans in every library")
async def my_loans(request: web.Request) -> LoanList:
    svc, who = services(request), principal(request)
    if not who.person_id:
        return LoanList(items=[])
    now = utcnow()
    async with svc.db.reader() as s:
        rows = await service.loans_of(s, who.person_id)
        items = []
        for loan, title in rows:
            out = loan_out(loan, title)
            if loan.due_at < now:
                out.fine_so_far_fen = (await fines.assess(s, loan, now))[1]
            items.append(out)
    return LoanList(items=items)


# --- requests (holds) -------------------------------------------------------------------------------------------

REQUESTER = staff("librarian") | RESIDENT


class RequestIn(Input):
    work_id: str | None = Field(default=None, max_length=32, description="any copy of this work")
    item_barcode: str | None = Field(default=None, max_length=64, description="or this one copy")
    item_library: str | None = Field(default=None, max_length=32, description="the copy's library, for item_barcode")
    pickup_service_point: str = Field(min_length=1, max_length=40)
    credential: CredentialIn | None = Field(default=None, description="staff: the reader's; a resident sends none")


class RequestOut(Output):
    id: str
    work_id: str
    requested_item_id: str | None
    item_id: str | None
    pickup_library: str
    pickup_service_point: str
    state: str
    created_at: dt.datetime
    targeted_at: dt.datetime | None
    ready_at: dt.datetime | None
    hold_until: dt.datetime | None
    closed_at: dt.datetime | None
    transit_id: str | None
    loan_id: str | None
    title: str | None = None


class RequestList(Output):
    items: list[RequestOut]


class PullQuery(Input):
    service_point: str = Field(min_length=1, max_length=40)


class PullOut(Output):
    request_id: str
    item_id: str
    barcode: str
    owner_library: str
    current_service_point: str | None
    work_id: str
    title: str | None
    pickup_library: str
    pickup_service_point: str
    targeted_at: dt.datetime | None


class PullList(Output):
    items: list[PullOut]


def request_out(req: Request, title: str | None = None) -> RequestOut:
    out = RequestOut.model_validate(req)
    out.title = title
    return out


@routes.post(
    "/api/v1/circulation/requests",
    access=REQUESTER,
    body=RequestIn,
    response=RequestOut,
    status=201,
    summary="Request a work or a copy for pickup at any member library (staff: for a reader; a resident: for "
    "themself); an available copy is targeted at once, else the request waits",
    errors=(403, 404, 409),
)
async def create_request(request: web.Request, body: RequestIn) -> web.Response:
    svc, who = services(request), principal(request)
    if not body.work_id and not body.item_barcode:
        raise errors.WorkNotFound("send work_id or item_barcode")
    resident = who.kind == "resident"
    cred = body.credential
    cmd = requests.Place(
        pickup_service_point=body.pickup_service_point,
        work_id=body.work_id,
        item_barcode=body.item_barcode,
        item_library=body.item_library,
        credential=service.Credential(cred.type, cred.value, cred.institution) if cred and not resident else None,
    )

    async def work(uow):  # noqa: ANN001, ANN202
        person = (who.person_id or "") if resident else None
        return request_out(await requests.place(uow, svc, cmd, _staff(who), person))

    return await idempotency.run(request, svc, who, body, work, 201)


@routes.delete(
    "/api/v1/circulation/requests/{request_id}",
    access=REQUESTER,
    response=RequestOut,
    summary="Cancel a request at any stage (staff: any; a resident: their own); the copy goes on where it should",
    errors=(404, 409),
)
async def cancel_request(request: web.Request) -> web.Response:
    svc, who = services(request), principal(request)
    person_id = (who.person_id or "") if who.kind == "resident" else None
    rid = request.match_info["request_id"]

    async def work(uow):  # noqa: ANN001, ANN202
        return request_out(await requests.cancel(uow, svc, rid, _staff(who), person_id))

    return await idempotency.run(request, svc, who, None, work, 200)


@routes.get(
    "/api/v1/circulation/pull-list",
    access=DESK,
    query=PullQuery,
    response=PullList,
    summary="Copies at your library targeted for requests: take them from the shelf and check them in",
    errors=(403, 404),
)
async def get_pull_list(request: web.Request, query: PullQuery) -> PullList:
    svc, who = services(request), principal(request)
    async with svc.db.reader() as s:
        at = await service.desk(s, query.service_point, _staff(who))
        rows = await requests.pull_list(s, at)
    return PullList(
        items=[
            PullOut(
                request_id=r.id,
                item_id=i.item_id,
                barcode=i.barcode,
                owner_library=i.library,
                current_service_point=i.current_service_point,
                work_id=r.work_id,
                title=title,
                pickup_library=r.pickup_library,
                pickup_service_point=r.pickup_service_point,
                targeted_at=r.targeted_at,
            )
            for r, i, title in rows
        ]
    )


@routes.get("/api/v1/me/requests", access=RESIDENT, response=RequestList, summary="My requests in every library")
async def my_requests(request: web.Request) -> RequestList:
    svc, who = services(request), principal(request)
    if not who.person_id:
        return RequestList(items=[])
    async with svc.db.reader() as s:
        rows = await requests.requests_of(s, who.person_id)
    return RequestList(items=[request_out(r, t) for r, t in rows])
