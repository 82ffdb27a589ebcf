"""The shared outbound HTTP client: the only module that constructs httpx clients.

Clients are made once per process. Each ``httpx.AsyncClient`` owns a connection pool; one per
request means no connection reuse, a TCP (and TLS) handshake per call, and leaked sockets under
load. The FastAPI lifespan builds the client once, keeps it on ``app.state`` and closes it on
shutdown. Routes receive it with ``Depends(get_http_client)``, or the ``SharedHttpClient`` alias.
Ruff's banned-api rule (TID251) rejects ``httpx.AsyncClient``/``httpx.Client`` anywhere else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, Request
from opentelemetry import trace

from .settings import Settings
from .telemetry import NULL_OBSERVER, Observer
from .transport import Downstreams, OutboundTransport


def build_http_client(
    settings: Settings,
    *,
    tracer: trace.Tracer | None = None,
    observer: Observer = NULL_OBSERVER,
    base_transport: httpx.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> httpx.AsyncClient:
    """Build the process-wide client from settings.

    The defaults are the seed's client: ``Timeout(5.0, connect=1.0)``,
    ``Limits(max_connections=200, max_keepalive_connections=100)`` and the service name as
    ``User-Agent``. Every request goes through ``OutboundTransport``, which adds the circuit
    breaker, retries, trace headers, the outbound log line and metrics around ``base_transport``
    (the pooled httpx transport unless a test passes another). ``clock`` drives deadlines and
    breaker timing; tests pass a fake one instead of sleeping.
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
            inner,
            downstreams=Downstreams(
                settings.retry_for, settings.breaker_for, observer=observer, clock=clock
            ),
            tracer=tracer or trace.get_tracer(__name__),
            observer=observer,
            max_response_bytes=http.max_response_bytes,
            clock=clock,
        ),
    )


def open_client(app: FastAPI) -> httpx.AsyncClient | None:
    """The app's shared client while its lifespan runs, else None."""
    client: httpx.AsyncClient | None = getattr(app.state, "http_client", None)
    return None if client is None or client.is_closed else client


def get_http_client(request: Request) -> httpx.AsyncClient:
    """FastAPI dependency: the shared client that the lifespan opened."""
    client = open_client(request.app)
    if client is None:
        msg = "The shared HTTP client is not open: is the app running inside its lifespan?"
        raise RuntimeError(msg)
    return client


def outbound_transport(client: httpx.AsyncClient) -> OutboundTransport:
    """The outbound chain of a client built here (for breaker state and tests)."""
    transport = client._transport
    if not isinstance(transport, OutboundTransport):
        msg = "this client was not built by build_http_client"
        raise TypeError(msg)
    return transport


SharedHttpClient = Annotated[httpx.AsyncClient, Depends(get_http_client)]
"""Annotate a route parameter with this to receive the shared client."""
