"""Hospital systems: an incremental pull of a member hospital's FHIR R4 server into the health ingest."""
