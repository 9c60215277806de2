"""Mutual recognition of examination and laboratory results: FHIR in, prior results with verdicts out."""

from __future__ import annotations

from typing import Any


def register(registry: Any) -> None:
    """Mount the health routes and jobs (ingest, recognition and the FHIR endpoint add theirs here)."""
