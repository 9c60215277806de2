"""The default recognition catalogue (laboratory items by LOINC, imaging items by modality and body site) and the
demo hospitals' QC certifications.

Windows follow how fast a value changes: electrolytes, blood counts and glucose a week; liver and kidney
function a month; HbA1c, lipids, thyroid and serology three months; imaging one to six months. Eligibility is
二级甲等 and above with QC required, as the twin-city agreement has it. Seeding is idempotent by item code: an item
already present (perhaps changed by an administrator since) is left alone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Sequence

from sqlalchemy import select

from federation.db import UnitOfWork
from federation.services import Services
from health import catalogue
from health.models import RecognitionItem

EFFECTIVE_FROM = dt.date(2023, 1, 1)
LEVELS = ("三级甲等", "三级乙等", "三级", "二级甲等")
ACTOR = "system:demo"


@dataclasses.dataclass(frozen=True)
class Spec:
    code: str
    name: str
    category: str
    qc_category: str
    window_days: int
    loinc: str | None = None
    modality: str | None = None
    body_site: str | None = None  # SNOMED CT body structure


LABORATORY = [
    Spec("LAB-GLU", "葡萄糖 Glucose", "laboratory", "clinical_chemistry", 7, "2345-7"),
    Spec("LAB-HBA1C", "糖化血红蛋白 HbA1c", "laboratory", "clinical_chemistry", 90, "4548-4"),
    Spec("LAB-CREA", "肌酐 Creatinine", "laboratory", "clinical_chemistry", 30, "2160-0"),
    Spec("LAB-BUN", "尿素氮 Urea nitrogen", "laboratory", "clinical_chemistry", 30, "3094-0"),
    Spec("LAB-UA", "尿酸 Urate", "laboratory", "clinical_chemistry", 30, "3084-1"),
    Spec("LAB-ALT", "丙氨酸氨基转移酶 ALT", "laboratory", "clinical_chemistry", 30, "1742-6"),
    Spec("LAB-AST", "天门冬氨酸氨基转移酶 AST", "laboratory", "clinical_chemistry", 30, "1920-8"),
    Spec("LAB-TBIL", "总胆红素 Total bilirubin", "laboratory", "clinical_chemistry", 30, "1975-2"),
    Spec("LAB-ALB", "白蛋白 Albumin", "laboratory", "clinical_chemistry", 30, "1751-7"),
    Spec("LAB-TC", "总胆固醇 Total cholesterol", "laboratory", "clinical_chemistry", 90, "2093-3"),
    Spec("LAB-TG", "甘油三酯 Triglyceride", "laboratory", "clinical_chemistry", 90, "2571-8"),
    Spec("LAB-HDL", "高密度脂蛋白胆固醇 HDL cholesterol", "laboratory", "clinical_chemistry", 90, "2085-9"),
    Spec("LAB-LDL", "低密度脂蛋白胆固醇 LDL cholesterol", "laboratory", "clinical_chemistry", 90, "2089-1"),
    Spec("LAB-K", "钾 Potassium", "laboratory", "clinical_chemistry", 7, "2823-3"),
    Spec("LAB-NA", "钠 Sodium", "laboratory", "clinical_chemistry", 7, "2951-2"),
    Spec("LAB-HGB", "血红蛋白 Haemoglobin", "laboratory", "haematology", 7, "718-7"),
    Spec("LAB-WBC", "白细胞计数 Leukocytes", "laboratory", "haematology", 7, "6690-2"),
    Spec("LAB-RBC", "红细胞计数 Erythrocytes", "laboratory", "haematology", 7, "789-8"),
    Spec("LAB-PLT", "血小板计数 Platelets", "laboratory", "haematology", 7, "777-3"),
    Spec("LAB-TSH", "促甲状腺激素 TSH", "laboratory", "immunology", 90, "3016-3"),
    Spec("LAB-FT4", "游离甲状腺素 Free T4", "laboratory", "immunology", 90, "3024-7"),
    Spec("LAB-HBSAG", "乙型肝炎表面抗原 HBsAg", "laboratory", "immunology", 90, "5196-1"),
    Spec("LAB-CEA", "癌胚抗原 CEA", "laboratory", "immunology", 90, "2039-6"),
    Spec("LAB-AFP", "甲胎蛋白 AFP", "laboratory", "immunology", 90, "1834-1"),
]
IMAGING = [
    Spec("IMG-CT-CHEST", "胸部CT CT chest", "imaging", "imaging", 90, "24627-2", "CT", "51185008"),
    Spec("IMG-CT-HEAD", "头部CT CT head", "imaging", "imaging", 90, "24725-4", "CT", "69536005"),
    Spec("IMG-MR-BRAIN", "头颅MR MR brain", "imaging", "imaging", 180, "24590-2", "MR", "12738006"),
    Spec("IMG-MR-LSPINE", "腰椎MR MR lumbar spine", "imaging", "imaging", 180, "24968-0", "MR", "122496007"),
    Spec("IMG-DX-CHEST", "胸部X线 XR chest", "imaging", "imaging", 30, "36643-5", "DX", "51185008"),
    Spec("IMG-US-ABD", "腹部超声 US abdomen", "imaging", "imaging", 30, "24558-9", "US", "818983003"),
    Spec("IMG-US-THYROID", "甲状腺超声 US thyroid", "imaging", "imaging", 90, "25010-0", "US", "69748006"),
    Spec("IMG-CT-ABD", "腹部CT CT abdomen", "imaging", "imaging", 90, None, "CT", "818983003"),
]
DEFAULT = LABORATORY + IMAGING
QC_CATEGORIES = ("clinical_chemistry", "haematology", "immunology", "imaging")
# (hospital, valid from, valid to): CQH1 and SCH1 certified now; SCH2's certification ran out in 2025
DEMO_QC = (
    ("CQH1", dt.date(2024, 1, 1), dt.date(2027, 12, 31)),
    ("SCH1", dt.date(2024, 1, 1), dt.date(2027, 12, 31)),
    ("SCH2", dt.date(2023, 1, 1), dt.date(2025, 6, 30)),
)
# a hospital's own LIS codes, to show local mappings: (hospital, system, code, item)
DEMO_LOCAL_CODES = (
    ("SCH2", "urn:twincity:SCH2:lis", "GLU", "LAB-GLU"),
    ("SCH2", "urn:twincity:SCH2:lis", "HGB", "LAB-HGB"),
    ("CQH1", "urn:twincity:CQH1:lis", "1001", "LAB-CREA"),
)


async def seed(uow: UnitOfWork, svc: Services, *, actor: str, specs: Sequence[Spec] = DEFAULT) -> int:
    """Add the items of ``specs`` that are missing (by code); returns how many were added."""
    known = set((await uow.session.scalars(select(RecognitionItem.code))).all())
    added = 0
    for spec in specs:
        if spec.code in known:
            continue
        await catalogue.create_item(
            uow,
            svc,
            catalogue.NewItem(
                code=spec.code,
                category=spec.category,
                name=spec.name,
                qc_category=spec.qc_category,
                loinc=spec.loinc,
                modality=spec.modality,
                body_site=spec.body_site,
                rules=catalogue.Rules(
                    effective_from=EFFECTIVE_FROM, window_days=spec.window_days, levels=LEVELS, qc_required=True
                ),
            ),
            actor=actor,
        )
        added += 1
    return added


async def seed_qc(
    uow: UnitOfWork,
    svc: Services,
    hospital_code: str,
    categories: Sequence[str],
    valid_from: dt.date,
    valid_to: dt.date,
    *,
    actor: str = ACTOR,
    scheme: str = "国家卫生健康委临床检验中心室间质量评价",
) -> int:
    """Give a hospital a certification of each category over one period; returns how many were new."""
    added = 0
    for category in categories:
        _, new = await catalogue.add_qc(
            uow, svc, catalogue.NewQc(hospital_code, category, valid_from, valid_to, scheme), actor=actor
        )
        added += int(new)
    return added


async def load_demo(svc: Services) -> dict[str, int]:
    """The ``twincity demo load`` step: the default catalogue, the demo hospitals' QC and a few local codes."""
    async with svc.db.uow() as uow:
        items = await seed(uow, svc, actor=ACTOR)
        qc = 0
        for code, valid_from, valid_to in DEMO_QC:
            qc += await seed_qc(uow, svc, code, QC_CATEGORIES, valid_from, valid_to)
        local = 0
        for hospital, system, code, item in DEMO_LOCAL_CODES:
            _, new = await catalogue.map_local_code(
                uow, svc, catalogue.Mapping(hospital, system, code, item), actor=ACTOR
            )
            local += int(new)
        await uow.commit()
    return {"recognition items": items, "qc certifications": qc, "local codes": local}
