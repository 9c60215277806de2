"""Errors of the union catalogue."""

from federation.errors import InvalidInput, NotFound


class WorkNotFound(NotFound):
    code = "catalog.work_not_found"


class RecordNotFound(NotFound):
    code = "catalog.record_not_found"


class BadQuery(InvalidInput):
    code = "catalog.bad_query"
    status = 400
    title = "The search query cannot be run"


class BadImport(InvalidInput):
    code = "catalog.bad_import"
