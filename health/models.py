"""The tables of mutual recognition: QC certifications, the versioned recognition catalogue, stored FHIR resources,
doctors' decisions and emergency overrides.

A hospital's level, ownership and participation date live on ``institutions`` (the member registry); what else
recognition depends on is here, as data administrators change without a deploy.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from federation.db import Base, id_column, utcnow


class QcCertification(Base):
    """A hospital's quality-control certification for one category (laboratory, imaging, or a finer one such as
    ``clinical_chemistry``), valid over a date range (both ends inclusive)."""

    __tablename__ = "health_qc_certifications"
    __table_args__ = (Index("ix_health_qc_institution_category", "institution_id", "category"),)

    id: Mapped[str] = id_column()
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"))
    category: Mapped[str] = mapped_column(String(40))
    scheme: Mapped[str] = mapped_column(String(200), default="")  # who certified: e.g. 国家卫健委临检中心室间质评
    valid_from: Mapped[dt.date] = mapped_column(Date)
    valid_to: Mapped[dt.date] = mapped_column(Date)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RecognitionItem(Base):
    """An item of the recognition catalogue: a laboratory test (by LOINC) or an imaging examination (modality and
    body site). What may change over time (window, eligibility, whether it is in the catalogue at all) lives in its
    versions."""

    __tablename__ = "health_items"

    id: Mapped[str] = id_column()
    code: Mapped[str] = mapped_column(String(40), unique=True)  # the federation's own item code, e.g. LAB-GLU
    category: Mapped[str] = mapped_column(String(20))  # laboratory | imaging
    name: Mapped[str] = mapped_column(String(200))
    loinc: Mapped[str | None] = mapped_column(String(20), index=True)
    modality: Mapped[str | None] = mapped_column(String(16))  # DICOM modality: CT, MR, DX, US, ...
    body_site: Mapped[str | None] = mapped_column(String(64))  # SNOMED CT body structure code
    qc_category: Mapped[str] = mapped_column(String(40))  # which QC certification covers it
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ItemVersion(Base):
    """One version of an item's rules, in force from ``effective_from`` (inclusive) to ``effective_to``
    (exclusive; open when null). Versions are never edited: a change closes the current one and opens the next;
    a removal closes it and opens none."""

    __tablename__ = "health_item_versions"
    __table_args__ = (UniqueConstraint("item_id", "version"),)

    id: Mapped[str] = id_column()
    item_id: Mapped[str] = mapped_column(ForeignKey("health_items.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    effective_from: Mapped[dt.date] = mapped_column(Date)
    effective_to: Mapped[dt.date | None] = mapped_column(Date)
    window_days: Mapped[int] = mapped_column(Integer)
    levels: Mapped[list[Any]] = mapped_column(default=list)  # eligible hospital levels; empty: any level
    public_only: Mapped[bool] = mapped_column(Boolean, default=False)
    qc_required: Mapped[bool] = mapped_column(Boolean, default=True)
    changed_by: Mapped[str] = mapped_column(String(200), default="")
    changed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    note: Mapped[str] = mapped_column(String(500), default="")


class LocalCode(Base):
    """A hospital's own code for a catalogue item (its LIS/PACS code system and code)."""

    __tablename__ = "health_local_codes"
    __table_args__ = (UniqueConstraint("institution_id", "system", "code"),)

    id: Mapped[str] = id_column()
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"))
    system: Mapped[str] = mapped_column(String(200))
    code: Mapped[str] = mapped_column(String(64))
    item_id: Mapped[str] = mapped_column(ForeignKey("health_items.id"), index=True)
    created_by: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class CatalogueGeneration(Base):
    """One row whose number goes up with every catalogue, mapping or QC change, so a process can keep the
    catalogue in memory and know with one cheap read when to load it again."""

    __tablename__ = "health_catalogue_generation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)


class StoredResource(Base):
    """A FHIR resource as a member hospital sent it (references rewritten to ours), with the columns searches and
    verdicts need. ``id`` is the id we serve at ``/fhir/{type}/{id}``; ``source_id`` is the hospital's own, so a
    re-send of the same resource updates this row instead of adding one."""

    __tablename__ = "fhir_resources"
    __table_args__ = (
        UniqueConstraint("institution_id", "resource_type", "source_id"),
        # withdrawn last, after the order the pages walk: a search's count reads the index alone (migration 0012)
        Index("ix_fhir_resources_person_type_effective", "person_id", "resource_type", "effective_at", "withdrawn"),
        Index("ix_fhir_resources_type_updated", "resource_type", "last_updated"),
    )

    id: Mapped[str] = id_column()
    resource_type: Mapped[str] = mapped_column(String(40))
    institution_id: Mapped[str] = mapped_column(ForeignKey("institutions.id"))
    source_id: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(Integer, default=1)
    last_updated: Mapped[dt.datetime] = mapped_column(default=utcnow)
    status: Mapped[str | None] = mapped_column(String(24))
    person_id: Mapped[str | None] = mapped_column(ForeignKey("persons.id"))  # the subject, once linked
    category: Mapped[str | None] = mapped_column(String(20))  # laboratory | imaging | ...
    code_system: Mapped[str | None] = mapped_column(String(200))
    code: Mapped[str | None] = mapped_column(String(64))
    effective_at: Mapped[dt.datetime | None]  # effective[x] (start of a period), or ImagingStudy.started
    issued_at: Mapped[dt.datetime | None]
    withdrawn: Mapped[bool] = mapped_column(Boolean, default=False)  # entered-in-error
    body: Mapped[dict[str, Any]]


class ResourceLink(Base):
    """A reference between stored resources that searches follow: DiagnosticReport.result → Observation
    (``_include``), Provenance.target → anything (``_revinclude``)."""

    __tablename__ = "fhir_links"
    __table_args__ = (Index("ix_fhir_links_target", "target_id", "rel"),)

    source_id: Mapped[str] = mapped_column(ForeignKey("fhir_resources.id"), primary_key=True)
    rel: Mapped[str] = mapped_column(String(40), primary_key=True)  # result, target, specimen, ...
    target_id: Mapped[str] = mapped_column(String(32), primary_key=True)


class Decision(Base):
    """A doctor accepting a prior result, or declining it with a coded reason (01-08). The verdict the doctor saw
    is kept with it: the figures count recognised results accepted and declined."""

    __tablename__ = "health_decisions"
    __table_args__ = (Index("ix_health_decisions_issuer_at", "issuing_institution", "decided_at"),)

    id: Mapped[str] = id_column()
    result_id: Mapped[str] = mapped_column(ForeignKey("fhir_resources.id"), index=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)
    decision: Mapped[str] = mapped_column(String(10))  # accepted | declined
    reason_code: Mapped[str | None] = mapped_column(String(2))
    reason_text: Mapped[str | None] = mapped_column(String(500))
    note: Mapped[str | None] = mapped_column(Text)
    recognised: Mapped[bool] = mapped_column(Boolean)
    reasons: Mapped[list[Any]] = mapped_column(default=list)  # why not recognised, when not
    item_code: Mapped[str | None] = mapped_column(String(40))
    issuing_institution: Mapped[str] = mapped_column(String(32))
    deciding_institution: Mapped[str | None] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(200))
    decided_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class AccessOverride(Base):
    """An emergency override: a doctor read a patient's results without consent, with a stated reason. Each one
    waits for an administrator's review."""

    __tablename__ = "health_overrides"

    id: Mapped[str] = id_column()
    person_id: Mapped[str] = mapped_column(ForeignKey("persons.id"), index=True)
    actor: Mapped[str] = mapped_column(String(200))
    institution: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(index=True)
    reviewed_by: Mapped[str | None] = mapped_column(String(200))
    review_outcome: Mapped[str | None] = mapped_column(String(20))  # justified | unjustified
    review_note: Mapped[str | None] = mapped_column(String(500))
