"""The union catalogue: MARC ingest, one bibliographic model, work clusters, holdings and search."""
