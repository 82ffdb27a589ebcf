"""The outbound chain of the shared client, in one place.

Every request sent through the shared client passes ``OutboundTransport.handle_async_request``,
which, around the pooled base transport:

1. opens a CLIENT span and injects ``traceparent``/``tracestate`` (W3C Trace Context);
2. sends the request;
3. writes one log line (method, redacted URL, status, duration_ms, downstream host) and reports
   the attempt to the metrics observer.

Cross-cutting behaviour lives here rather than in httpx event hooks or in each caller, so a
caller cannot forget it and a reader finds the whole chain in one module.
"""

from __future__ import annotations

import time

import httpx
import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .redact import redact_url
from .telemetry import Observer

log = structlog.get_logger("outbound")
_propagator = TraceContextTextMapPropagator()


def downstream_host(url: httpx.URL) -> str:
    """``host:port`` of a URL, the key that logs, metrics and per-host state share."""
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.host}:{port}"


class OutboundTransport(httpx.AsyncBaseTransport):
    """Wraps the base transport with tracing, logging and metrics for each outbound call."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, *, tracer: trace.Tracer, observer: Observer
    ) -> None:
        self._inner = inner
        self._tracer = tracer
        self._observer = observer

    @property
    def inner(self) -> httpx.AsyncBaseTransport:
        """The transport that does the network I/O."""
        return self._inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = downstream_host(request.url)
        method = request.method
        with self._tracer.start_as_current_span(
            f"{method}",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": method,
                "server.address": request.url.host,
                "server.port": request.url.port or 0,
                "url.full": redact_url(request.url),
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            # The W3C propagator writes traceparent, and tracestate when the context has one.
            _propagator.inject(request.headers)
            started = time.perf_counter()
            try:
                response = await self._inner.handle_async_request(request)
            except httpx.HTTPError as exc:
                duration = time.perf_counter() - started
                outcome = type(exc).__name__
                span.set_status(Status(StatusCode.ERROR, outcome))
                self._observer.outbound(host, method, outcome, duration)
                log.warning(
                    "outbound.error",
                    method=method,
                    url=redact_url(request.url),
                    host=host,
                    error=outcome,
                    duration_ms=round(duration * 1000, 2),
                )
                raise
            duration = time.perf_counter() - started
            status = response.status_code
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            self._observer.outbound(host, method, str(status), duration)
            log.info(
                "outbound.response",
                method=method,
                url=redact_url(request.url),
                host=host,
                status=status,
                duration_ms=round(duration * 1000, 2),
            )
            return response

    async def aclose(self) -> None:
        await self._inner.aclose()
