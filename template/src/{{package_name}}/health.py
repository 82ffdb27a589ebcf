"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

from .http_client import open_client, outbound_transport

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process serves requests. It checks no dependency on purpose, so a
    failing downstream never gets the service restarted."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the lifespan has started and the shared client is open.

    Open circuits are reported under ``breakers`` but do not make the service unready: taking it
    out of rotation because a downstream is down would spread one outage to every caller.
    """
    client = open_client(request.app)
    body: dict[str, object] = {
        "status": "starting" if client is None else "ready",
        "http_client": "closed" if client is None else "open",
    }
    if client is not None:
        body["breakers"] = outbound_transport(client).downstreams.snapshot()
    return JSONResponse(body, status_code=503 if client is None else 200)
