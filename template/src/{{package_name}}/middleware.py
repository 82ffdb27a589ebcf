"""Pure ASGI request middleware: request id, server span, one log line, metrics, and a clean
500 for unhandled errors.

Pure ASGI rather than ``BaseHTTPMiddleware``: the latter runs the app in a separate task, which
costs throughput and loses contextvars set by the endpoint.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .problems import PROBLEM_JSON, problem_body
from .redact import redact_query
from .telemetry import Observer

log = structlog.get_logger("request")
_propagator = TraceContextTextMapPropagator()

REQUEST_ID_HEADER = "x-request-id"
# An inbound request id is kept only when it is short and plain, so it cannot forge log lines.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def accept_request_id(value: str | None) -> str:
    """The inbound X-Request-ID when well-formed, otherwise a new random one."""
    if value is not None and _VALID_REQUEST_ID.fullmatch(value):
        return value
    return uuid.uuid4().hex


def trace_carrier(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The W3C headers of a request, for the propagator.

    A ``traceparent`` sent more than once is ambiguous; W3C Trace Context says to start a new
    trace then, so neither copy is passed on (and ``tracestate`` goes with it).
    """
    carrier: dict[str, str] = {}
    parents = 0
    for name, value in headers:
        if name == b"traceparent":
            parents += 1
            carrier["traceparent"] = value.decode("latin-1")
        elif name == b"tracestate":
            previous = carrier.get("tracestate")
            text = value.decode("latin-1")
            # Several tracestate headers are one list, joined with commas (RFC 9110 5.3).
            carrier["tracestate"] = f"{previous},{text}" if previous else text
    if parents != 1:
        return {}
    return carrier


class RequestMiddleware:
    """Wraps every HTTP request of the app."""

    def __init__(self, app: ASGIApp, *, tracer: trace.Tracer, observer: Observer) -> None:
        self.app = app
        self.tracer = tracer
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        headers: list[tuple[bytes, bytes]] = scope["headers"]
        raw_request_id = next((v for k, v in headers if k == b"x-request-id"), None)
        request_id = accept_request_id(
            raw_request_id.decode("latin-1") if raw_request_id is not None else None
        )
        method: str = scope["method"]
        parent = _propagator.extract(trace_carrier(headers))
        span = self.tracer.start_span(method, context=parent, kind=SpanKind.SERVER)
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        structlog.contextvars.bind_contextvars(request_id=request_id)

        status = 500
        response_started = False
        started = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        error: BaseException | None = None
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            error = exc
            status = 500
            if not response_started:
                await _send_internal_error(send, request_id)
        finally:
            duration = time.perf_counter() - started
            route = _route_template(scope)
            span.update_name(f"{method} {route}")
            span.set_attribute("http.request.method", method)
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(Status(StatusCode.ERROR))
            self.observer.inbound(method, route, status, duration)
            fields = {
                "method": method,
                "path": scope["path"],
                "query": redact_query(scope["query_string"].decode("latin-1")),
                "route": route,
                "status": status,
                "duration_ms": round(duration * 1000, 2),
            }
            if error is not None:
                log.error("request.failed", exc_info=error, **fields)
            else:
                log.info("request", **fields)
            span.end()
            structlog.contextvars.unbind_contextvars("request_id")
            otel_context.detach(token)


def _route_template(scope: Scope) -> str:
    """The matched route's path template (low cardinality), or ``<unmatched>``."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "<unmatched>"


async def _send_internal_error(send: Send, request_id: str) -> None:
    body = problem_body(500, "Internal Server Error", f"Request {request_id} failed.")
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
