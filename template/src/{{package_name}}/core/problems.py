"""RFC 9457 problem details (``application/problem+json``) for every error the service answers,
and how the OpenAPI document describes them.

Every route documents the problems the platform can send for it, with this media type and
``PROBLEM_SCHEMA`` (the body ``problem_body`` writes), so a client generated from the schema
parses errors as they come: ``build_app`` sets ``ANY_ROUTE`` on every route and
``SERVICE_ROUTE`` on the service's own (whatever router they come from), and replaces FastAPI's
``HTTPValidationError`` for 422.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details: what went wrong, for people and for programs.",
    "type": "object",
    "properties": {
        "type": {"type": "string", "description": "Always about:blank: the status says it all."},
        "title": {"type": "string", "description": "The status's reason phrase."},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "What happened to this request."},
    },
    "required": ["type", "title", "status"],
}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
"""Where ``PROBLEM_SCHEMA`` is in the OpenAPI document (``build_app`` puts it there)."""


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


def problem_doc(description: str, **extra: Any) -> dict[str, Any]:
    """An OpenAPI response of problem+json, for a route's ``responses``: e.g.
    ``@router.get(..., responses={404: problem_doc("No such order")})``."""
    return {"description": description, "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}}, **extra}


RETRY_AFTER_HEADER = {
    "description": (
        "When the downstream's circuit is open: seconds until the service tries it again."
    ),
    "schema": {"type": "integer", "minimum": 1},
}

ANY_ROUTE: dict[int | str, dict[str, Any]] = {
    413: problem_doc("The request body is larger than max_request_body_bytes."),
    431: problem_doc("The request headers are larger than max_header_bytes."),
    500: problem_doc("The service failed; the detail names the request id in its logs."),
}
"""What the platform can answer on any route: its request limits, and an unhandled error."""

SERVICE_ROUTE: dict[int | str, dict[str, Any]] = {
    422: problem_doc("The request's parameters or body are not valid; the detail says which."),
    502: problem_doc("A downstream failed, or answered what the service could not use."),
    503: problem_doc(
        "A downstream's circuit is open (with Retry-After), or the outbound pool is exhausted.",
        headers={"Retry-After": RETRY_AFTER_HEADER},
    ),
    504: problem_doc("A downstream did not answer in time."),
}
"""What the platform can answer on a route of the service's: validation, and the answers to a
downstream's failures (core/errors.py). 422 is kept only where the route has parameters or a
body (``build_app``)."""
