"""Circulation's reports over HTTP: the aggregate figures the two governments evaluate.

Access: federation admins and every library's librarians. The figures are aggregates without personal data (the
transit list names copies, never readers), so a librarian sees every library's rows, not only their own: comparing
libraries is the point of the figures. Doctors, residents and API keys are refused.
"""

from __future__ import annotations

import datetime as dt
from typing import Self

from aiohttp import web
from pydantic import Field, model_validator

from federation.app import services
from federation.web.routing import Routes, staff
from federation.web.schema import Input, Output
from library.circulation import reports

routes = Routes("circulation")

REPORTS = staff("admin", "librarian")


class PeriodQuery(Input):
    since: dt.date | None = Field(default=None, description="first day of loans counted (UTC); default: the first")
    until: dt.date | None = Field(default=None, description="last day of loans counted, included (UTC)")

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.since and self.until and self.since > self.until:
            raise ValueError("since is after until")
        return self

    def period(self) -> reports.Period:
        return reports.Period(self.since, self.until)


class TransitReportQuery(Input):
    overdue_days: int = Field(default=3, ge=0, le=365, description="a transit older than this many days is overdue")


class LibraryPairOut(Output):
    library: str
    home_library: str
    loans: int
    active: int


class LoansByLibrary(Output):
    since: dt.date | None
    until: dt.date | None
    total: int
    items: list[LibraryPairOut]


class MonthOut(Output):
    month: str
    loans: int
    cross_city: int


class CityFlowOut(Output):
    month: str
    lending_city: str
    home_city: str
    loans: int


class CrossCityLoans(Output):
    since: dt.date | None
    until: dt.date | None
    months: list[MonthOut]
    flows: list[CityFlowOut]


class TransitRouteOut(Output):
    from_library: str
    to_library: str
    in_transit: int
    overdue: int
    oldest: dt.datetime


class OverdueTransitOut(Output):
    id: str
    item_id: str
    barcode: str
    from_library: str
    from_service_point: str
    to_library: str
    to_service_point: str
    created_at: dt.datetime


class TransitReport(Output):
    overdue_days: int
    in_transit: int
    overdue: int
    routes: list[TransitRouteOut]
    overdue_transits: list[OverdueTransitOut]


@routes.get(
    "/api/v1/circulation/reports/loans-by-library",
    access=REPORTS,
    query=PeriodQuery,
    response=LoansByLibrary,
    summary="Loans made in a period per lending library and reader's home library",
)
async def loans_by_library(request: web.Request, query: PeriodQuery) -> LoansByLibrary:
    async with services(request).db.reader() as s:
        rows = await reports.loans_by_library(s, query.period())
    items = [LibraryPairOut.model_validate(r) for r in rows]
    return LoansByLibrary(since=query.since, until=query.until, total=sum(r.loans for r in rows), items=items)


@routes.get(
    "/api/v1/circulation/reports/cross-city-loans",
    access=REPORTS,
    query=PeriodQuery,
    response=CrossCityLoans,
    summary="Per month: loans, and loans to readers whose home library is in another city than the lender",
)
async def cross_city_loans(request: web.Request, query: PeriodQuery) -> CrossCityLoans:
    async with services(request).db.reader() as s:
        months, flows = await reports.cross_city(s, query.period())
    return CrossCityLoans(
        since=query.since,
        until=query.until,
        months=[MonthOut.model_validate(m) for m in months],
        flows=[CityFlowOut.model_validate(f) for f in flows],
    )


@routes.get(
    "/api/v1/circulation/reports/transits",
    access=REPORTS,
    query=TransitReportQuery,
    response=TransitReport,
    summary="Copies in transit per route, and those travelling for longer than overdue_days",
)
async def transit_report(request: web.Request, query: TransitReportQuery) -> TransitReport:
    async with services(request).db.reader() as s:
        routes_, late = await reports.transits(s, query.overdue_days)
    return TransitReport(
        overdue_days=query.overdue_days,
        in_transit=sum(r.in_transit for r in routes_),
        overdue=sum(r.overdue for r in routes_),
        routes=[TransitRouteOut.model_validate(r) for r in routes_],
        overdue_transits=[OverdueTransitOut.model_validate(t) for t in late],
    )


class FillTimeOut(Output):
    pickup_library: str
    placed: int
    filled: int
    fulfilled: int
    open: int
    avg_hours: float | None
    max_hours: float | None


class RequestFillTime(Output):
    since: dt.date | None
    until: dt.date | None
    items: list[FillTimeOut]


@routes.get(
    "/api/v1/circulation/reports/request-fill-time",
    access=REPORTS,
    query=PeriodQuery,
    response=RequestFillTime,
    summary="Per pickup library: requests placed in a period and the hours until a copy waited on the hold shelf",
)
async def request_fill_time(request: web.Request, query: PeriodQuery) -> RequestFillTime:
    async with services(request).db.reader() as s:
        rows = await reports.request_fill_time(s, query.period())
    return RequestFillTime(since=query.since, until=query.until, items=[FillTimeOut.model_validate(r) for r in rows])
