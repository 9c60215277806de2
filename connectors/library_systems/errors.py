"""The library connectors' errors: an OAI-PMH error the harvest cannot work around, a drop folder it cannot use."""

from __future__ import annotations

from connectors.framework.errors import ConnectorError, InvalidConnector


class OaiError(ConnectorError):
    """The repository answered an OAI-PMH ``<error>`` (``badArgument``, ``cannotDisseminateFormat``, ...)."""

    code = "connectors.oai_error"
    title = "The library's OAI-PMH endpoint refused the request"

    def __init__(self, detail: str, *, oai_code: str) -> None:
        super().__init__(detail, oai_code=oai_code)
        self.oai_code = oai_code


class BadDropFolder(InvalidConnector):
    code = "connectors.bad_drop_folder"
