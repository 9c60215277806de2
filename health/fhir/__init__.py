"""FHIR R4 (R4B models): the ingest of hospitals' Bundles and the REST endpoint at ``/fhir``."""
