"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import JSONResponse

from .http_client import open_client, outbound_transport
from .server import is_draining

router = APIRouter(tags=["health"])
log = structlog.get_logger("health")

ReadinessCheck = Callable[[], Awaitable[object]]
"""A readiness check: ready unless it raises or returns ``False``."""


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process serves requests. It checks no dependency on purpose, so a
    failing downstream never gets the service restarted."""
    return {"status": "ok"}


async def _run_check(name: str, check: ReadinessCheck, limit: float) -> str:
    """``ok``, or why the check failed: it raised, returned ``False`` or timed out."""
    try:
        async with asyncio.timeout(limit):
            passed = await check()
    except TimeoutError:
        outcome = f"failed: no answer within {limit:g}s"
    except Exception as exc:  # any failure of a check means not ready
        outcome = f"failed: {type(exc).__name__}: {exc}"
    else:
        outcome = "failed: returned False" if passed is False else "ok"
    if outcome != "ok":
        log.warning("readiness.check_failed", check=name, outcome=outcome)
    return outcome


class BreakerSnapshot(BaseModel):
    """A downstream host's circuit breaker, as ``/readyz`` shows it."""

    state: Literal["closed", "open", "half_open"]
    retry_after: int
    window_calls: int
    window_failures: int


class Readiness(BaseModel):
    """The body of ``/readyz``; ``http_client`` and the rest are left out while draining."""

    status: Literal["ready", "starting", "unready", "draining"]
    http_client: Literal["open", "closed"] | None = None
    breakers: dict[str, BreakerSnapshot] | None = None
    checks: dict[str, str] | None = None


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "Not ready: starting, draining, or a readiness check failed.",
        }
    },
)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the lifespan has started, the shared client is open and every readiness check
    the service registered (``extend.add_readiness_check``) passes.

    Open circuits are reported under ``breakers`` but do not make the service unready: taking it
    out of rotation because a downstream is down would spread one outage to every caller.
    During the ``shutdown_delay`` after SIGTERM it answers 503 (``draining``), and only it.
    """
    if is_draining(request.app):
        return JSONResponse({"status": "draining"}, status_code=503)
    client = open_client(request.app)
    body: dict[str, object] = {
        "status": "starting" if client is None else "ready",
        "http_client": "closed" if client is None else "open",
    }
    if client is None:
        return JSONResponse(body, status_code=503)
    body["breakers"] = outbound_transport(client).downstreams.snapshot()
    checks = request.app.state.extensions.readiness_checks
    if checks:
        timeout = request.app.state.settings.readiness_timeout
        outcomes = await asyncio.gather(
            *(_run_check(name, check, timeout) for name, check in checks.items())
        )
        body["checks"] = dict(zip(checks, outcomes, strict=True))
        if any(outcome != "ok" for outcome in outcomes):
            body["status"] = "unready"
            return JSONResponse(body, status_code=503)
    return JSONResponse(body)
