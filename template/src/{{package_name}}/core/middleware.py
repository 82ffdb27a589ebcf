"""Pure ASGI request middleware: request id, server span, one log line, metrics, and a clean
500 for unhandled errors.

Pure ASGI rather than ``BaseHTTPMiddleware``: the latter runs the app in a separate task, which
costs throughput and loses contextvars set by the endpoint.
"""

from __future__ import annotations

import re
import secrets
import time

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import propagation
from .problems import PROBLEM_JSON, problem_body
from .redact import redact_query
from .telemetry import Observer

log = structlog.get_logger("request")

REQUEST_ID_HEADER = "x-request-id"
# An inbound request id is kept only when it is short and plain, so it cannot forge log lines.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")


def accept_request_id(value: str | None) -> str:
    """The inbound X-Request-ID when well-formed, otherwise a new random one."""
    if value is not None and _VALID_REQUEST_ID.fullmatch(value):
        return value
    return secrets.token_hex(16)  # 128 random bits; uuid4().hex costs five times as much


def trace_headers(headers: list[tuple[bytes, bytes]]) -> tuple[list[str], list[str]]:
    """Every ``traceparent`` and ``tracestate`` value of a request, in order.

    Duplicates are kept: ``propagation`` treats a repeated traceparent as invalid and joins
    repeated tracestate headers into one list, as W3C Trace Context says.
    """
    parents: list[str] = []
    states: list[str] = []
    for name, value in headers:
        if name == b"traceparent":
            parents.append(value.decode("latin-1"))
        elif name == b"tracestate":
            states.append(value.decode("latin-1"))
    return parents, states


class RequestMiddleware:
    """Wraps every HTTP request of the app."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tracer: trace.Tracer,
        observer: Observer,
        max_header_bytes: int = 16 * 1024,
        max_body_bytes: int = 1024 * 1024,
    ) -> None:
        self.app = app
        self.tracer = tracer
        self.observer = observer
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes

    def _refusal(self, headers: list[tuple[bytes, bytes]]) -> tuple[int, str, str] | None:
        """Status, title and detail for a request refused before the app sees it."""
        size = 0
        declared: bytes | None = None
        for name, value in headers:
            size += len(name) + len(value)
            if name == b"content-length":
                declared = value
        if size > self.max_header_bytes:
            detail = f"Request headers exceed {self.max_header_bytes} bytes."
            return 431, "Request Header Fields Too Large", detail
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            detail = f"Request bodies are limited to {self.max_body_bytes} bytes."
            return 413, "Content Too Large", detail
        return None

    def _bounded(self, receive: Receive) -> Receive:
        """``receive`` that stops a body without Content-Length at the size limit."""
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge
            return message

        return bounded_receive

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
        parent = propagation.extract(*trace_headers(headers))
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
            refusal = self._refusal(headers)
            if refusal is not None:
                await _send_problem(send_wrapper, *refusal)
            else:
                await self.app(scope, self._bounded(receive), send_wrapper)
        except _BodyTooLarge:
            if not response_started:
                detail = f"Request bodies are limited to {self.max_body_bytes} bytes."
                await _send_problem(send_wrapper, 413, "Content Too Large", detail)
        except Exception as exc:
            error = exc
            status = 500
            if not response_started:
                await _send_problem(
                    send, 500, "Internal Server Error", f"Request {request_id} failed.", request_id
                )
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


class _BodyTooLarge(Exception):
    """The request body grew past ``max_body_bytes`` while the app read it."""


async def _send_problem(
    send: Send, status: int, title: str, detail: str, request_id: str | None = None
) -> None:
    """A problem+json answer straight from the middleware (the app never ran, or failed)."""
    body = problem_body(status, title, detail)
    headers = [
        (b"content-type", PROBLEM_JSON.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    if request_id is not None:  # the send wrapper adds it otherwise
        headers.append((b"x-request-id", request_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
