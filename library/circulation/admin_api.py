"""Circulation's administration over HTTP: reader blocks, item declarations, loan policies, closed days, fines.

Administrators act for every library; librarians for their own library's copies, readers, rules and calendar.
Writes take an ``Idempotency-Key`` like the desk's.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from aiohttp import web
from pydantic import Field, model_validator

from federation.app import principal, services
from federation.web.routing import PUBLIC, RESIDENT, Principal, Routes, staff
from federation.web.schema import Input, Output
from library.circulation import admin, fines, idempotency, service
from library.circulation.api import CredentialIn, ItemOut, LoanOut, item_out, loan_out
from library.circulation.models import ClosedDay, Fine, LibraryPolicy, LoanPolicy

routes = Routes("circulation")

ADMINISTER = staff("librarian", "admin")


def _staff(who: Principal) -> service.Staff:
    return service.Staff(actor=who.actor, library=who.institution)


def _scope(who: Principal) -> str | None:
    """The library a caller is confined to: their own for a librarian, none for an administrator."""
    return None if who.is_admin else (who.institution or "")


# --- blocks -----------------------------------------------------------------------------------------------------


class BlockIn(Input):
    credential: CredentialIn
    blocked: bool = Field(description="true to block in every member library, false to lift the block")
    reason: str = Field(min_length=1, max_length=300)


class BlockOut(Output):
    person_id: str
    blocked: bool
    block_reason: str | None
    active_loans: int


@routes.post(
    "/api/v1/circulation/reader-blocks",
    access=ADMINISTER,
    body=BlockIn,
    response=BlockOut,
    summary="Block or unblock a reader in every member library, with a reason (librarians: their own readers)",
    errors=(403, 404),
)
async def set_block(request: web.Request, body: BlockIn) -> web.Response:
    svc, who = services(request), principal(request)
    cred = service.Credential(body.credential.type, body.credential.value, body.credential.institution)

    async def work(uow):  # noqa: ANN001, ANN202
        row = await admin.set_block(uow, svc, cred, body.blocked, body.reason, _staff(who), _scope(who))
        return BlockOut.model_validate(row)

    return await idempotency.run(request, svc, who, body, work, 200)


# --- item declarations ------------------------------------------------------------------------------------------


class DeclarationIn(Input):
    item_barcode: str = Field(min_length=1, max_length=64)
    item_library: str | None = Field(default=None, max_length=32, description="the owner, when barcodes clash")
    declaration: Literal["missing", "lost", "withdrawn", "found"]
    note: str | None = Field(default=None, max_length=300)


class DeclarationOut(Output):
    item: ItemOut
    loan: LoanOut | None


@routes.post(
    "/api/v1/circulation/item-declarations",
    access=ADMINISTER,
    body=DeclarationIn,
    response=DeclarationOut,
    summary="Declare a copy missing, lost (ends its loan), withdrawn, or found (librarians: their library's copies)",
    errors=(403, 404, 409),
)
async def declare_item(request: web.Request, body: DeclarationIn) -> web.Response:
    svc, who = services(request), principal(request)

    async def work(uow):  # noqa: ANN001, ANN202
        d = await admin.declare(
            uow, svc, body.item_barcode, body.item_library, body.declaration, body.note, _staff(who), _scope(who)
        )
        return DeclarationOut(item=item_out(d.item), loan=loan_out(d.loan) if d.loan else None)

    return await idempotency.run(request, svc, who, body, work, 200)


# --- policies ---------------------------------------------------------------------------------------------------


class FederationPolicyIO(Input):
    max_total_loans: int = Field(ge=0, le=1000, description="loans a person may hold across every library")
    loan_days: int = Field(ge=1, le=365, description="loan period where no library rule matches")
    max_renewals: int = Field(ge=0, le=50)
    overdue_block_days: int | None = Field(default=None, ge=0, le=3650, description="null: overdue loans never block")
    due_soon_days: int = Field(default=3, ge=0, le=60, description="due-soon notices start this many days ahead")
    transit_overdue_days: int = Field(default=7, ge=1, le=365)


class FederationPolicyOut(Output):
    max_total_loans: int
    loan_days: int
    max_renewals: int
    overdue_block_days: int | None
    due_soon_days: int
    transit_overdue_days: int


class LibraryPolicyIn(Input):
    floating: bool = False
    lends_to_other_libraries: bool = True
    hold_shelf_days: int | None = Field(default=None, ge=1, le=60, description="null: 7 days")
    fine_per_day_fen: int | None = Field(default=None, ge=0, le=100_000, description="fen per item per open day")
    fine_cap_fen: int | None = Field(default=None, ge=0, le=10_000_000, description="per loan; null: no cap")
    fine_block_fen: int | None = Field(
        default=None, ge=0, le=10_000_000, description="open fines above this block checkouts here"
    )


class RuleIn(Input):
    loan_days: int = Field(ge=1, le=365)
    max_renewals: int = Field(ge=0, le=50)
    max_loans: int | None = Field(default=None, ge=0, le=1000, description="at this library; null: no own limit")
    can_request: bool = True


class RuleOut(Output):
    library: str
    reader_category: str
    item_type: str
    loan_days: int
    max_renewals: int
    max_loans: int | None
    can_request: bool


class LibraryPolicyOut(Output):
    library: str
    floating: bool
    lends_to_other_libraries: bool
    hold_shelf_days: int | None
    fine_per_day_fen: int | None
    fine_cap_fen: int | None
    fine_block_fen: int | None
    rules: list[RuleOut] = []


def _library_out(row: LibraryPolicy, rules: list[LoanPolicy]) -> LibraryPolicyOut:
    out = LibraryPolicyOut.model_validate(row)
    out.rules = [RuleOut.model_validate(r) for r in rules]
    return out


@routes.get(
    "/api/v1/circulation/policies/federation",
    access=ADMINISTER,
    response=FederationPolicyOut,
    summary="The federation-wide limits: total loans, default loan period, overdue block, notice timings",
)
async def get_federation_policy(request: web.Request) -> FederationPolicyOut:
    async with services(request).db.reader() as s:
        return FederationPolicyOut(**await admin.federation_policy(s))


@routes.put(
    "/api/v1/circulation/policies/federation",
    access=staff("admin"),
    body=FederationPolicyIO,
    response=FederationPolicyOut,
    summary="Change the federation-wide limits (administrators; audited)",
)
async def put_federation_policy(request: web.Request, body: FederationPolicyIO) -> web.Response:
    svc, who = services(request), principal(request)

    async def work(uow):  # noqa: ANN001, ANN202
        return FederationPolicyOut(**await admin.set_federation_policy(uow, svc, body.model_dump(), _staff(who)))

    return await idempotency.run(request, svc, who, body, work, 200)


@routes.get(
    "/api/v1/circulation/policies/libraries/{library}",
    access=ADMINISTER,
    response=LibraryPolicyOut,
    summary="A library's circulation settings and its loan rules (reader category x item type)",
    errors=(404,),
)
async def get_library_policy(request: web.Request) -> LibraryPolicyOut:
    async with services(request).db.reader() as s:
        library = await admin.library_code(s, request.match_info["library"])
        row, rules = await admin.library_policy(s, library)
    return _library_out(row, rules)


@routes.put(
    "/api/v1/circulation/policies/libraries/{library}",
    access=ADMINISTER,
    body=LibraryPolicyIn,
    response=LibraryPolicyOut,
    summary="Change a library's settings: floating, lending to others, hold shelf days, fines (audited)",
    errors=(403, 404),
)
async def put_library_policy(request: web.Request, body: LibraryPolicyIn) -> web.Response:
    svc, who = services(request), principal(request)

    async def work(uow):  # noqa: ANN001, ANN202
        row = await admin.set_library_policy(
            uow, svc, request.match_info["library"], body.model_dump(), _staff(who), _scope(who)
        )
        _, rules = await admin.library_policy(uow.session, row.library)
        return _library_out(row, rules)

    return await idempotency.run(request, svc, who, body, work, 200)


RULE_PATH = "/api/v1/circulation/policies/libraries/{library}/rules/{reader_category}/{item_type}"


@routes.put(
    RULE_PATH,
    access=ADMINISTER,
    body=RuleIn,
    response=RuleOut,
    summary="Create or change the loan rule for a reader category and item type at a library ('*' for any)",
    errors=(403, 404, 409),
)
async def put_rule(request: web.Request, body: RuleIn) -> web.Response:
    svc, who = services(request), principal(request)
    m = request.match_info

    async def work(uow):  # noqa: ANN001, ANN202
        row = await admin.set_rule(
            uow, svc, m["library"], m["reader_category"], m["item_type"], body.model_dump(), _staff(who), _scope(who)
        )
        return RuleOut.model_validate(row)

    return await idempotency.run(request, svc, who, body, work, 200)


@routes.delete(
    RULE_PATH,
    access=ADMINISTER,
    summary="Remove a loan rule; the next most general rule (or the federation's defaults) applies",
    errors=(403, 404),
)
async def delete_rule(request: web.Request) -> web.Response:
    svc, who = services(request), principal(request)
    m = request.match_info
    async with svc.db.uow() as uow:
        await admin.delete_rule(uow, svc, m["library"], m["reader_category"], m["item_type"], _staff(who), _scope(who))
        await uow.commit()
    return web.Response(status=204)


# --- closed days ------------------------------------------------------------------------------------------------


class ClosedDayIn(Input):
    date: dt.date | None = Field(default=None, description="one day the library is closed")
    weekday: int | None = Field(default=None, ge=0, le=6, description="or a weekday every week: 0 Monday .. 6 Sunday")
    note: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _one(self) -> ClosedDayIn:
        if (self.date is None) == (self.weekday is None):
            raise ValueError("send either date or weekday")
        return self


class ClosedDayOut(Output):
    id: str
    library: str
    date: dt.date | None
    weekday: int | None
    note: str | None


class ClosedDayList(Output):
    items: list[ClosedDayOut]


DAYS_PATH = "/api/v1/circulation/libraries/{library}/closed-days"


@routes.get(
    DAYS_PATH,
    access=PUBLIC,
    response=ClosedDayList,
    summary="The days a library is closed (due dates move past them)",
    errors=(404,),
)
async def list_closed_days(request: web.Request) -> ClosedDayList:
    async with services(request).db.reader() as s:
        rows = await admin.closed_days(s, request.match_info["library"])
    return ClosedDayList(items=[ClosedDayOut.model_validate(r) for r in rows])


@routes.post(
    DAYS_PATH,
    access=ADMINISTER,
    body=ClosedDayIn,
    response=ClosedDayOut,
    status=201,
    summary="Close a library on a date or a weekday every week (librarians: their own library)",
    errors=(403, 404, 409),
)
async def add_closed_day(request: web.Request, body: ClosedDayIn) -> web.Response:
    svc, who = services(request), principal(request)

    async def work(uow):  # noqa: ANN001, ANN202
        row: ClosedDay = await admin.add_closed_day(
            uow, svc, request.match_info["library"], body.date, body.weekday, body.note, _staff(who), _scope(who)
        )
        return ClosedDayOut.model_validate(row)

    return await idempotency.run(request, svc, who, body, work, 201)


@routes.delete(
    DAYS_PATH + "/{day_id}",
    access=ADMINISTER,
    summary="Open a library again on a closed day",
    errors=(403, 404),
)
async def remove_closed_day(request: web.Request) -> web.Response:
    svc, who = services(request), principal(request)
    async with svc.db.uow() as uow:
        await admin.remove_closed_day(
            uow, svc, request.match_info["library"], request.match_info["day_id"], _staff(who), _scope(who)
        )
        await uow.commit()
    return web.Response(status=204)


# --- fines ------------------------------------------------------------------------------------------------------


class FineOut(Output):
    id: str
    loan_id: str
    library: str
    days: int
    amount_fen: int
    state: str
    created_at: dt.datetime
    settled_at: dt.datetime | None


class FineList(Output):
    items: list[FineOut]
    open_fen: int


class SettleIn(Input):
    note: str | None = Field(default=None, max_length=300)


@routes.get("/api/v1/me/fines", access=RESIDENT, response=FineList, summary="My fines in every library")
async def my_fines(request: web.Request) -> FineList:
    svc, who = services(request), principal(request)
    if not who.person_id:
        return FineList(items=[], open_fen=0)
    async with svc.db.reader() as s:
        rows: list[Fine] = await fines.fines_of(s, who.person_id)
    return FineList(
        items=[FineOut.model_validate(r) for r in rows], open_fen=sum(r.amount_fen for r in rows if r.state == "open")
    )


async def _settle(request: web.Request, body: SettleIn, how: str) -> web.Response:
    svc, who = services(request), principal(request)
    fine_id = request.match_info["fine_id"]

    async def work(uow):  # noqa: ANN001, ANN202
        row = await fines.settle(uow, svc, fine_id, how, who.actor, _scope(who), body.note)
        return FineOut.model_validate(row)

    return await idempotency.run(request, svc, who, body, work, 200)


@routes.post(
    "/api/v1/circulation/fines/{fine_id}/payment",
    access=ADMINISTER,
    body=SettleIn,
    response=FineOut,
    summary="Record that a fine was paid (the lending library's staff; audited)",
    errors=(403, 404, 409),
)
async def pay_fine(request: web.Request, body: SettleIn) -> web.Response:
    return await _settle(request, body, fines.PAID)


@routes.post(
    "/api/v1/circulation/fines/{fine_id}/waiver",
    access=ADMINISTER,
    body=SettleIn,
    response=FineOut,
    summary="Waive a fine (the lending library's staff; audited)",
    errors=(403, 404, 409),
)
async def waive_fine(request: web.Request, body: SettleIn) -> web.Response:
    return await _settle(request, body, fines.WAIVED)
