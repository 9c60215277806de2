"""RFC 9457 problem details: the one shape every error of the API takes."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

PROBLEM_TYPE_BASE = "https://twincity.example/problems/"
PROBLEM_JSON = "application/problem+json"


def problem_response(
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    body: dict[str, Any] = {"type": PROBLEM_TYPE_BASE + code, "title": title, "status": status, "code": code}
    if detail:
        body["detail"] = detail
    body.update({k: v for k, v in extra.items() if v is not None})
    return web.Response(
        status=status,
        text=json.dumps(body, ensure_ascii=False, default=str),
        content_type=PROBLEM_JSON,
        headers=headers,
    )
