"""The recognition catalogue over HTTP: anyone reads it (it is public information), administrators keep it,
a hospital's system maps its own codes; QC certifications are read by staff and kept by administrators."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from aiohttp import web
from pydantic import Field

from federation.app import principal, services
from federation.web.routing import ANY_STAFF, PUBLIC, Routes, scopes, staff
from federation.web.schema import Input, Output
from health import catalogue
from health.models import ItemVersion, QcCertification
from health.recognition import load_catalogue, today_in_china

routes = Routes("health-catalogue")

ADMIN = staff("admin")
SCOPE = "health.catalogue"
ITEM_CODE = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$"
LEVEL = Field(min_length=1, max_length=20)
Category = Literal["laboratory", "imaging"]


class RulesIn(Input):
    effective_from: dt.date
    window_days: int = Field(ge=1, le=3650, description="how many days after its issue day a result is recognised")
    levels: list[str] = Field(
        default_factory=list, max_length=20, description="eligible hospital levels, e.g. 三级甲等; empty: any level"
    )
    public_only: bool = False
    qc_required: bool = True
    note: str = Field(default="", max_length=300)

    def rules(self) -> catalogue.Rules:
        return catalogue.Rules(
            effective_from=self.effective_from,
            window_days=self.window_days,
            levels=tuple(x for x in (s.strip() for s in self.levels) if x)[:20],
            public_only=self.public_only,
            qc_required=self.qc_required,
            note=self.note,
        )


class NewItemIn(RulesIn):
    code: str = Field(pattern=ITEM_CODE, description="the federation's item code, e.g. LAB-GLU")
    category: Category
    name: str = Field(min_length=1, max_length=200)
    qc_category: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description="laboratory, imaging or a finer one")
    loinc: str | None = Field(default=None, pattern=r"^\d{1,7}-\d$")
    modality: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,4}$", description="DICOM modality: CT, MR, ...")
    body_site: str | None = Field(default=None, pattern=r"^\d{6,18}$", description="SNOMED CT body structure code")


class RemovalIn(Input):
    effective_to: dt.date = Field(description="the first day the item is no longer in the catalogue")
    note: str = Field(default="", max_length=200)


class LocalCodeIn(Input):
    hospital: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")
    system: str = Field(min_length=1, max_length=200, description="the hospital's LIS/PACS code system URI")
    code: str = Field(min_length=1, max_length=64)
    item_code: str = Field(pattern=ITEM_CODE)


class QcIn(Input):
    category: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")
    valid_from: dt.date
    valid_to: dt.date = Field(description="the last day the certification is valid")
    scheme: str = Field(default="", max_length=200, description="who certified, e.g. 国家卫健委临检中心室间质评")


class ListQuery(Input):
    at: dt.date | None = Field(default=None, description="the catalogue in force that day (default: today)")
    category: Category | None = None


class VersionOut(Output):
    version: int
    effective_from: dt.date
    effective_to: dt.date | None
    window_days: int
    levels: list[str]
    public_only: bool
    qc_required: bool
    changed_by: str
    changed_at: dt.datetime
    note: str


class ItemInForce(Output):
    code: str
    category: str
    name: str
    loinc: str | None
    modality: str | None
    body_site: str | None
    qc_category: str
    version: int
    effective_from: dt.date
    effective_to: dt.date | None
    window_days: int
    levels: list[str]
    public_only: bool
    qc_required: bool


class ItemList(Output):
    at: dt.date
    generation: int
    items: list[ItemInForce]


class LocalCodeOut(Output):
    hospital: str
    system: str
    code: str
    item_code: str
    created_by: str
    created_at: dt.datetime


class ItemOut(Output):
    code: str
    category: str
    name: str
    loinc: str | None
    modality: str | None
    body_site: str | None
    qc_category: str
    versions: list[VersionOut]
    local_codes: list[LocalCodeOut]


class QcOut(Output):
    id: str
    hospital: str
    category: str
    scheme: str
    valid_from: dt.date
    valid_to: dt.date
    created_by: str
    created_at: dt.datetime


class QcList(Output):
    hospital: str
    items: list[QcOut]


def _version_out(v: ItemVersion) -> VersionOut:
    return VersionOut.model_validate(v)


def _qc_out(hospital: str, q: QcCertification) -> QcOut:
    return QcOut(
        id=q.id,
        hospital=hospital,
        category=q.category,
        scheme=q.scheme,
        valid_from=q.valid_from,
        valid_to=q.valid_to,
        created_by=q.created_by,
        created_at=q.created_at,
    )


async def _item_out(request: web.Request, code: str) -> ItemOut:
    async with services(request).db.reader() as s:
        d = await catalogue.item_detail(s, code)
    return ItemOut(
        code=d.item.code,
        category=d.item.category,
        name=d.item.name,
        loinc=d.item.loinc,
        modality=d.item.modality,
        body_site=d.item.body_site,
        qc_category=d.item.qc_category,
        versions=[_version_out(v) for v in d.versions],
        local_codes=[
            LocalCodeOut(
                hospital=h,
                system=lc.system,
                code=lc.code,
                item_code=d.item.code,
                created_by=lc.created_by,
                created_at=lc.created_at,
            )
            for h, lc in d.local_codes
        ],
    )


@routes.get(
    "/api/v1/health/catalogue/items",
    access=PUBLIC,
    query=ListQuery,
    response=ItemList,
    summary="The recognition catalogue in force on a day (default today, China time), with each item's rules",
)
async def list_items(request: web.Request, query: ListQuery) -> ItemList:
    async with services(request).db.reader() as s:
        cat = await load_catalogue(s)
    day = query.at or today_in_china()
    items = [
        ItemInForce(
            code=i.code,
            category=i.category,
            name=i.name,
            loinc=i.loinc,
            modality=i.modality,
            body_site=i.body_site,
            qc_category=i.qc_category,
            version=v.version,
            effective_from=v.effective_from,
            effective_to=v.effective_to,
            window_days=v.window_days,
            levels=sorted(v.levels),
            public_only=v.public_only,
            qc_required=v.qc_required,
        )
        for i, v in cat.in_force(day, query.category)
    ]
    return ItemList(at=day, generation=cat.generation, items=items)


@routes.get(
    "/api/v1/health/catalogue/items/{code}",
    access=PUBLIC,
    response=ItemOut,
    summary="One catalogue item with every version of its rules and every hospital's local code for it",
    errors=(404,),
)
async def get_item(request: web.Request) -> ItemOut:
    return await _item_out(request, request.match_info["code"])


@routes.post(
    "/api/v1/health/catalogue/items",
    access=ADMIN,
    body=NewItemIn,
    response=ItemOut,
    status=201,
    summary="Add an item to the catalogue with its first version of rules",
    errors=(409, 422),
)
async def create_item(request: web.Request, body: NewItemIn) -> ItemOut:
    svc = services(request)
    cmd = catalogue.NewItem(
        code=body.code,
        category=body.category,
        name=body.name,
        qc_category=body.qc_category,
        rules=body.rules(),
        loinc=body.loinc,
        modality=body.modality,
        body_site=body.body_site,
    )
    async with svc.db.uow() as uow:
        item = await catalogue.create_item(uow, svc, cmd, actor=principal(request).actor)
        await uow.commit()
    return await _item_out(request, item.code)


@routes.post(
    "/api/v1/health/catalogue/items/{code}/versions",
    access=ADMIN,
    body=RulesIn,
    response=ItemOut,
    status=201,
    summary="New rules for an item from a date on: the open version closes that day (versions are never edited)",
    errors=(404, 409),
)
async def add_version(request: web.Request, body: RulesIn) -> ItemOut:
    svc = services(request)
    async with svc.db.uow() as uow:
        await catalogue.add_version(uow, svc, request.match_info["code"], body.rules(), actor=principal(request).actor)
        await uow.commit()
    return await _item_out(request, request.match_info["code"])


@routes.post(
    "/api/v1/health/catalogue/items/{code}/removal",
    access=ADMIN,
    body=RemovalIn,
    response=ItemOut,
    summary="Take an item out of the catalogue from a date on (its results are no longer recognised from then)",
    errors=(404, 409),
)
async def remove_item(request: web.Request, body: RemovalIn) -> ItemOut:
    svc = services(request)
    async with svc.db.uow() as uow:
        await catalogue.remove_item(
            uow, svc, request.match_info["code"], body.effective_to, actor=principal(request).actor, note=body.note
        )
        await uow.commit()
    return await _item_out(request, request.match_info["code"])


@routes.post(
    "/api/v1/health/catalogue/local-codes",
    access=ADMIN | scopes(SCOPE),
    body=LocalCodeIn,
    response=LocalCodeOut,
    status=201,
    summary="Map a hospital's own LIS/PACS code to a catalogue item (a hospital's key: its own codes only)",
    errors=(403, 404, 409, 422),
)
async def map_local_code(request: web.Request, body: LocalCodeIn) -> web.Response | LocalCodeOut:
    svc, who = services(request), principal(request)
    acting_for = (who.institution or "") if who.kind == "apikey" else None
    async with svc.db.uow() as uow:
        row, new = await catalogue.map_local_code(
            uow,
            svc,
            catalogue.Mapping(body.hospital, body.system, body.code, body.item_code),
            actor=who.actor,
            acting_for=acting_for,
        )
        await uow.commit()
    out = LocalCodeOut(
        hospital=body.hospital.upper(),
        system=row.system,
        code=row.code,
        item_code=body.item_code.upper(),
        created_by=row.created_by,
        created_at=row.created_at,
    )
    return out if new else web.json_response(out.model_dump(mode="json"), status=200)


@routes.get(
    "/api/v1/health/hospitals/{code}/qc-certifications",
    access=ANY_STAFF,
    response=QcList,
    summary="A hospital's quality-control certifications, by category and date",
    errors=(404, 422),
)
async def list_qc(request: web.Request) -> QcList:
    async with services(request).db.reader() as s:
        inst, rows = await catalogue.qc_certifications(s, request.match_info["code"])
    return QcList(hospital=inst.code, items=[_qc_out(inst.code, q) for q in rows])


@routes.post(
    "/api/v1/health/hospitals/{code}/qc-certifications",
    access=ADMIN,
    body=QcIn,
    response=QcOut,
    status=201,
    summary="Record a hospital's quality-control certification for a category over a period",
    errors=(404, 422),
)
async def add_qc(request: web.Request, body: QcIn) -> web.Response | QcOut:
    svc = services(request)
    code = request.match_info["code"]
    async with svc.db.uow() as uow:
        row, new = await catalogue.add_qc(
            uow,
            svc,
            catalogue.NewQc(code, body.category, body.valid_from, body.valid_to, body.scheme),
            actor=principal(request).actor,
        )
        await uow.commit()
    out = _qc_out(code.strip().upper(), row)
    return out if new else web.json_response(out.model_dump(mode="json"), status=200)
