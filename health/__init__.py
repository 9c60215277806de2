"""Mutual recognition of examination and laboratory results: FHIR in, prior results with verdicts out."""

from __future__ import annotations

from typing import Any


def register(registry: Any) -> None:
    """Mount the health routes, jobs, scopes and demo data."""
    from health import models

    _ = models  # the tables join the schema's metadata
    from health import api

    registry.add_routes(api.routes)
    registry.add_scope("health.read", "read patients' prior results (with the patient's consent) as a hospital system")

    from health import catalogue_api, catalogue_seed

    registry.add_routes(catalogue_api.routes)
    registry.add_scope("health.catalogue", "map the hospital's own LIS/PACS codes to recognition catalogue items")
    registry.on_demo(catalogue_seed.load_demo)
    from health import catalogue

    registry.on_services(catalogue.register)  # a hospital's changed level or ownership reloads the verdicts' rules
    from health import demo

    registry.on_demo(demo.load)  # after the catalogue: the demo hospitals' results through the real FHIR ingest

    from health.fhir import rest

    registry.add_routes(rest.routes)

    from health.fhir import ingest_api
    from health.fhir import tasks as fhir_tasks

    registry.add_routes(ingest_api.routes)
    registry.on_services(fhir_tasks.register)
    registry.add_scope("health.write", "push the hospital's FHIR results (Bundles, NDJSON imports)")
