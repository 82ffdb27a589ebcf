"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process serves requests. It checks no dependency on purpose, so a
    failing downstream never gets the service restarted."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the lifespan has started and the shared client is open."""
    client = getattr(request.app.state, "http_client", None)
    ready = client is not None and not client.is_closed
    return JSONResponse(
        {"status": "ready" if ready else "starting", "http_client": "open" if ready else "closed"},
        status_code=200 if ready else 503,
    )
