"""RFC 9457 problem details (``application/problem+json``) for every error the service answers."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"


def problem_body(status: int, title: str, detail: str | None = None) -> bytes:
    """The JSON body of a problem answer."""
    body: dict[str, object] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    return orjson.dumps(body)


def problem_response(
    status: int,
    title: str,
    detail: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A problem+json response."""
    return Response(
        problem_body(status, title, detail),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )
