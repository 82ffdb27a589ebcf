"""The shared outbound HTTP client: the only module that constructs httpx clients.

Clients are made once per process. Each ``httpx.AsyncClient`` owns a connection pool; one per
request means no connection reuse, a TCP (and TLS) handshake per call, and leaked sockets under
load. The FastAPI lifespan builds the client once, keeps it on ``app.state`` and closes it on
shutdown. Routes receive it with ``Depends(get_http_client)``, or the ``SharedHttpClient`` alias.
Ruff's banned-api rule (TID251) rejects ``httpx.AsyncClient``/``httpx.Client`` anywhere else.
"""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import Depends, Request
from opentelemetry import trace

from .settings import Settings
from .telemetry import NULL_OBSERVER, Observer
from .transport import OutboundTransport


def build_http_client(
    settings: Settings,
    *,
    tracer: trace.Tracer | None = None,
    observer: Observer = NULL_OBSERVER,
    base_transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """Build the process-wide client from settings.

    The defaults are the seed's client: ``Timeout(5.0, connect=1.0)``,
    ``Limits(max_connections=200, max_keepalive_connections=100)`` and the service name as
    ``User-Agent``. Every request goes through ``OutboundTransport``, which adds trace headers,
    the outbound log line and metrics around ``base_transport`` (the pooled httpx transport
    unless a test passes another).
    """
    http = settings.http
    limits = httpx.Limits(
        max_connections=http.max_connections,
        max_keepalive_connections=http.max_keepalive_connections,
        keepalive_expiry=http.keepalive_expiry,
    )
    inner = base_transport or httpx.AsyncHTTPTransport(limits=limits)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(http.timeout, connect=http.connect_timeout),
        limits=limits,
        headers={"User-Agent": http.user_agent},
        transport=OutboundTransport(
            inner, tracer=tracer or trace.get_tracer(__name__), observer=observer
        ),
    )


def get_http_client(request: Request) -> httpx.AsyncClient:
    """FastAPI dependency: the shared client that the lifespan opened."""
    client: httpx.AsyncClient | None = getattr(request.app.state, "http_client", None)
    if client is None or client.is_closed:
        msg = "The shared HTTP client is not open: is the app running inside its lifespan?"
        raise RuntimeError(msg)
    return client


SharedHttpClient = Annotated[httpx.AsyncClient, Depends(get_http_client)]
"""Annotate a route parameter with this to receive the shared client."""
