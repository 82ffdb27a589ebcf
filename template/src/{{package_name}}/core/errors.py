"""Downstream failures, and how the service answers them (problem+json).

Typed clients raise these instead of leaking httpx exceptions into routes; the handler that
``create_app`` registers turns each into the status its class names.
"""

from __future__ import annotations

import math
from http import HTTPStatus

import orjson
from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.responses import Response

from .breaker import CircuitOpenError
from .problems import problem_response


class DownstreamError(Exception):
    """A downstream call did not give a usable answer."""

    status = 502
    title = "Bad Gateway"

    def __init__(self, downstream: str, detail: str) -> None:
        super().__init__(f"{downstream}: {detail}")
        self.downstream = downstream
        self.detail = detail


class DownstreamNotFound(DownstreamError):
    """The downstream answered 404 for the requested resource."""

    status = 404
    title = "Not Found"


class DownstreamTimeout(DownstreamError):
    """The downstream did not answer within the client's timeout."""

    status = 504
    title = "Gateway Timeout"


class DownstreamUnavailable(DownstreamError):
    """The call was not made: the host's circuit is open, or our connection pool is exhausted."""

    status = 503
    title = "Service Unavailable"


async def circuit_open_handler(_: Request, exc: Exception) -> Response:
    """Answer ``CircuitOpenError`` with 503 and a ``Retry-After`` of the time left open."""
    assert isinstance(exc, CircuitOpenError)  # noqa: S101 - registered for this class only
    retry_after = max(1, math.ceil(exc.retry_after))
    return problem_response(
        503,
        "Service Unavailable",
        f"Downstream {exc.host} is failing; calls to it are paused.",
        headers={"Retry-After": str(retry_after)},
    )


async def downstream_error_handler(_: Request, exc: Exception) -> Response:
    """Answer a ``DownstreamError`` with its status as problem+json."""
    assert isinstance(exc, DownstreamError)  # noqa: S101 - registered for this class only
    return problem_response(exc.status, exc.title, exc.detail)


async def http_exception_handler(_: Request, exc: Exception) -> Response:
    """Answer Starlette/FastAPI ``HTTPException`` as problem+json, keeping its headers."""
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for this class only
    # RFC 9457's detail is a string (and so is the documented schema): other details as JSON.
    detail = exc.detail if isinstance(exc.detail, str) else orjson.dumps(exc.detail).decode()
    return problem_response(exc.status_code, _reason(exc.status_code), detail, exc.headers)


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
