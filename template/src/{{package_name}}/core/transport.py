"""The outbound chain of the shared client, in one place.

Every request sent through the shared client passes ``OutboundTransport.handle_async_request``.
Per call it resolves the host's policy and deadline, then for each attempt:

1. asks the host's circuit breaker (an open circuit raises ``CircuitOpenError``: nothing is sent,
   nothing is retried);
2. opens a CLIENT span and injects ``traceparent``/``tracestate`` (W3C Trace Context);
3. sends through the pooled base transport, with timeouts clipped to the time left;
4. classifies the outcome, records it in the breaker, writes one log line and reports metrics;
   bounds the body (size, decoded size, deadline), and counts a body that fails as the
   downstream's failure;
5. decides on another attempt through ``retry`` (method safety, Retry-After, deadline, the
   host's retry budget), in a loop of its own that keeps out of stamina's instrumentation
   hooks but follows stamina's active and testing switches.

Cross-cutting behaviour lives here rather than in httpx2 event hooks or in each caller, so a
caller cannot forget it and a reader finds the whole chain in one module.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, NoReturn

import httpx2
import stamina
import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .breaker import BreakerPolicy, BreakerState, CircuitBreaker, Permit
from .decoding import BoundedDecoder, UndecodableResponse, decoder_for
from .redact import redact_url
from .retry import (
    RETRY_EXTENSION,
    RetryBudget,
    RetryPolicy,
    full_jitter_backoff,
    parse_retry_after,
    retry_reason,
)
from .telemetry import Observer

log = structlog.get_logger("outbound")
_TIMEOUT_PHASES = ("connect", "read", "write", "pool")
_propagator = TraceContextTextMapPropagator()


def downstream_host(url: httpx2.URL) -> str:
    """``host:port`` of a URL, the key that logs, metrics and per-host state share."""
    port = url.port or (443 if url.scheme == "https" else 80)
    return f"{url.host}:{port}"


class DeadlineExceeded(httpx2.TimeoutException):
    """The call's total deadline passed before another attempt could start."""


class ResponseTooLarge(httpx2.RemoteProtocolError):
    """The downstream's response body is larger than ``http.max_response_bytes``; the rest was
    not read, and the connection was dropped."""


class _BoundedBody(httpx2.AsyncByteStream):
    """A response body that stops at a size limit and at the call's deadline, decodes its
    ``Content-Encoding`` within the same limit, and reports how it ended.

    httpx2's read timeout bounds each read, not the whole body: a downstream that drips one byte
    every few seconds, or streams without end, would hold the caller forever. The limit holds
    for the bytes on the wire and, through ``BoundedDecoder``, for the decoded bytes: a
    decompression bomb stops at the limit (``DecodedResponseTooLarge``).

    A body that fails (too large, cut short, too slow, undecodable) is the downstream's failure,
    even under a 200: ``_BodyEnd`` records it in the breaker and writes its log line.

    It keeps no reference to its response: the response holds it (through httpx2's client's
    stream wrapper, which keeps ``elapsed`` itself), so reference counting frees the response,
    its request and the pool's objects as soon as the caller lets go, with no cycle for the
    cyclic garbage collector. (httpx's wrapper referred back to the response: a cycle per call
    that this class had to break when the body closed.)
    """

    def __init__(
        self,
        inner: httpx2.AsyncByteStream,
        request: httpx2.Request,
        *,
        limit: int,
        deadline: float,
        clock: Callable[[], float],
        decoder: BoundedDecoder | None,
        end: _BodyEnd,
    ) -> None:
        self._inner = inner
        self._request = request
        self._limit = limit
        self._deadline = deadline
        self._clock = clock
        self._decoder = decoder
        self._end: _BodyEnd | None = end

    async def __aiter__(self) -> AsyncIterator[bytes]:
        received = 0
        try:
            async for chunk in self._inner:
                received += len(chunk)
                if received > self._limit:
                    msg = f"response body exceeds {self._limit} bytes"
                    raise ResponseTooLarge(msg, request=self._request)
                self._check_deadline()
                if self._decoder is None:
                    yield chunk
                    continue
                for piece in self._decoder.feed(chunk):
                    self._check_deadline()
                    yield piece
            if self._decoder is not None:
                for piece in self._decoder.finish():
                    yield piece
        except httpx2.TransportError as exc:
            self._ended(exc)
            raise
        except BaseException:
            self._ended(None, abandoned=True)  # cancelled, or the caller stopped reading
            raise
        self._ended(None)

    def _check_deadline(self) -> None:
        if self._clock() > self._deadline:
            msg = "the call's deadline passed while reading the response body"
            raise httpx2.ReadTimeout(msg, request=self._request)

    def _ended(self, error: httpx2.TransportError | None, *, abandoned: bool = False) -> None:
        end, self._end = self._end, None
        if end is not None:
            end.report(error, abandoned=abandoned)

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._ended(None)  # closed unread or part-read by the caller: the downstream did well


@dataclass(slots=True)
class _BodyEnd:
    """What the end of a response body reports to: the breaker's outcome of the attempt (when
    its status was no failure, the outcome waits for the body), and for a body that failed, the
    ``outbound.error`` line and the error as the attempt's outcome in metrics."""

    request: httpx2.Request
    host: str
    breaker: CircuitBreaker
    permit: Permit | None
    observer: Observer
    started: float
    attempt: int
    url: str

    def report(self, error: httpx2.TransportError | None, *, abandoned: bool = False) -> None:
        if self.permit is not None:
            if abandoned:
                self.breaker.release(self.permit)
            else:
                self.breaker.record(self.permit, failure=error is not None)
        if error is None:
            return
        duration = time.perf_counter() - self.started
        outcome = type(error).__name__
        self.observer.outbound(self.host, self.request.method, outcome, duration)
        log.warning(
            "outbound.error",
            method=self.request.method,
            url=self.url,
            host=self.host,
            error=outcome,
            duration_ms=round(duration * 1000, 2),
            attempt=self.attempt,
            phase="body",
        )


@dataclass(slots=True)
class Downstream:
    """Per-host resilience state: its policies, retry budget and circuit breaker."""

    retry: RetryPolicy
    budget: RetryBudget
    breaker: CircuitBreaker


class Downstreams:
    """The per-host state of one client, created on first use of each host."""

    def __init__(
        self,
        retry_for: Callable[[str], RetryPolicy],
        breaker_for: Callable[[str], BreakerPolicy],
        *,
        observer: Observer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._retry_for = retry_for
        self._breaker_for = breaker_for
        self._observer = observer
        self._clock = clock
        self._hosts: dict[str, Downstream] = {}

    def get(self, host: str) -> Downstream:
        """The state of ``host``, created with its (possibly overridden) policies."""
        found = self._hosts.get(host)
        if found is None:
            retry = self._retry_for(host)
            found = Downstream(
                retry=retry,
                budget=RetryBudget(ratio=retry.budget_ratio, burst=retry.budget_burst),
                breaker=CircuitBreaker(
                    host,
                    self._breaker_for(host),
                    clock=self._clock,
                    on_transition=self._on_transition,
                ),
            )
            self._hosts[host] = found
            self._observer.breaker_state(host, BreakerState.CLOSED.value)
        return found

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Breaker state of every host seen so far, for /readyz."""
        return {host: state.breaker.snapshot() for host, state in self._hosts.items()}

    def _on_transition(self, host: str, old: BreakerState, new: BreakerState) -> None:
        log.warning("breaker.transition", host=host, old=old.value, new=new.value)
        self._observer.breaker_state(host, new.value)
        self._observer.breaker_transition(host, old.value, new.value)


class _Retryable(Exception):
    """An attempt's outcome that ``retry`` allows to retry; carries what to return or raise
    if no retry follows."""

    def __init__(
        self,
        reason: str,
        *,
        response: httpx2.Response | None = None,
        error: httpx2.HTTPError | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.response = response
        self.error = error
        self.retry_after = retry_after


class OutboundTransport(httpx2.AsyncBaseTransport):
    """Wraps the base transport with breaker, retries, tracing, logging and metrics."""

    def __init__(
        self,
        inner: httpx2.AsyncBaseTransport,
        *,
        downstreams: Downstreams,
        tracer: trace.Tracer,
        observer: Observer,
        max_response_bytes: int = 10 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._inner = inner
        self._max_response_bytes = max_response_bytes
        self._downstreams = downstreams
        self._tracer = tracer
        self._observer = observer
        self._clock = clock
        self._rng = rng

    @property
    def inner(self) -> httpx2.AsyncBaseTransport:
        """The transport that does the network I/O."""
        return self._inner

    @property
    def downstreams(self) -> Downstreams:
        """Per-host breakers and budgets."""
        return self._downstreams

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        host = downstream_host(request.url)
        downstream = self._downstreams.get(host)
        downstream.budget.deposit()
        deadline = self._clock() + downstream.retry.deadline
        timeouts: dict[str, float | None] = dict(request.extensions.get("timeout") or {})
        # The first attempt runs outside the retry loop: the success path builds nothing for it.
        try:
            return await self._attempt(request, host, downstream, 1, deadline, timeouts)
        except _Retryable as failure:
            first = failure
        try:
            return await self._retry(request, host, downstream, deadline, timeouts, first)
        except _Retryable as final:
            if final.response is not None:
                return final.response
            if final.error is not None:
                raise final.error from None
            raise

    async def _retry(
        self,
        request: httpx2.Request,
        host: str,
        downstream: Downstream,
        deadline: float,
        timeouts: dict[str, float | None],
        first: _Retryable,
    ) -> httpx2.Response:
        """Attempts 2..N, after the first attempt failed with ``first``.

        The loop is this module's rather than stamina's: stamina calls its instrumentation hooks
        (``stamina.instrumentation``) for every retry it runs, process-wide, with no per-call
        switch, and those hooks belong to the retries the service's own code writes with
        stamina. This chain logs and counts its retries itself, with host and reason. It follows
        stamina's process switches all the same: ``stamina.set_active(False)`` turns its retries
        off, and in ``stamina.set_testing(True)`` its waits are skipped."""
        policy = downstream.retry
        no_retry = request.extensions.get(RETRY_EXTENSION) is False or not stamina.is_active()
        max_attempts = 1 if no_retry else policy.max_attempts
        failure, attempts = first, 1
        while True:
            wait = self._next_wait(
                request, host, downstream, failure, attempts, max_attempts, deadline
            )
            if wait is None:
                raise failure
            if not stamina.is_testing():
                await asyncio.sleep(wait)
            attempts += 1
            try:
                return await self._attempt(request, host, downstream, attempts, deadline, timeouts)
            except _Retryable as retryable:
                failure = retryable

    def _next_wait(
        self,
        request: httpx2.Request,
        host: str,
        downstream: Downstream,
        failure: _Retryable,
        attempts: int,
        max_attempts: int,
        deadline: float,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to stop with ``failure``."""
        if attempts >= max_attempts:
            return None
        policy = downstream.retry
        if failure.retry_after is not None:
            wait, source = failure.retry_after, "retry-after"
            if wait > policy.retry_after_cap:
                self._give_up(host, failure.reason, "retry_after_over_cap", wait)
                return None
        else:
            wait, source = full_jitter_backoff(attempts, policy, self._rng), "backoff"
        if self._clock() + wait >= deadline:
            self._give_up(host, failure.reason, "deadline", wait)
            return None
        if downstream.breaker.state is BreakerState.OPEN:
            # This failure opened the circuit: waiting to be refused helps nobody.
            self._give_up(host, failure.reason, "circuit_open", wait)
            return None
        if not downstream.budget.try_spend():
            self._observer.retry_budget_exhausted(host)
            self._give_up(host, failure.reason, "budget_exhausted", wait)
            return None
        self._observer.retry(host, failure.reason)
        log.info(
            "outbound.retry",
            host=host,
            method=request.method,
            reason=failure.reason,
            attempt=attempts,
            wait_s=round(wait, 3),
            wait_source=source,
        )
        return float(wait)

    def _give_up(self, host: str, reason: str, why: str, wait: float) -> None:
        log.info("outbound.retry_skipped", host=host, reason=reason, why=why, wait_s=round(wait, 3))

    async def _attempt(
        self,
        request: httpx2.Request,
        host: str,
        downstream: Downstream,
        attempt: int,
        deadline: float,
        timeouts: dict[str, float | None],
    ) -> httpx2.Response:
        """One attempt, step by step: admit it, send it inside a client span with the trace
        headers, check the answer's size, account for it (breaker, span, metrics, log line),
        then return it or raise ``_Retryable`` for the retry loop to decide on."""
        permit = self._admit(request, downstream, deadline, timeouts)
        url = redact_url(request.url)
        with self._client_span(request, url, attempt) as span:
            # The W3C propagator writes traceparent, and tracestate when the context has one.
            _propagator.inject(request.headers)
            started = time.perf_counter()
            try:
                response = await self._inner.handle_async_request(request)
            except httpx2.TransportError as exc:
                self._failed(request, host, downstream, permit, exc, span, started, attempt, url)
            except BaseException:
                downstream.breaker.release(permit)  # cancelled: no outcome to record
                raise
            duration = time.perf_counter() - started
            await self._refuse_oversized(
                response, request, host, downstream, permit, span, started, attempt, url
            )
            # A failure status is the outcome now; any other waits for the body's end.
            failed = downstream.breaker.policy.counts_as_failure(response.status_code)
            end = _BodyEnd(
                request,
                host,
                downstream.breaker,
                None if failed else permit,
                self._observer,
                started,
                attempt,
                url,
            )
            await self._bound_body(
                response, request, deadline, timeouts, end, downstream, permit, span
            )
            if failed:
                downstream.breaker.record(permit, failure=True)
            self._account(response, request, host, span, duration, attempt, url)
            return await self._returned_or_retryable(response, request, downstream)

    def _admit(
        self,
        request: httpx2.Request,
        downstream: Downstream,
        deadline: float,
        timeouts: dict[str, float | None],
    ) -> Permit:
        """The breaker's permit for this attempt (``CircuitOpenError`` if none), and every
        phase's timeout clipped to the time left, so that the deadline bounds the call."""
        permit = downstream.breaker.acquire()
        remaining = deadline - self._clock()
        if remaining <= 0:
            downstream.breaker.release(permit)
            raise DeadlineExceeded("deadline exceeded before the attempt", request=request)
        request.extensions["timeout"] = {
            phase: remaining if limit is None else min(limit, remaining)
            for phase, limit in (timeouts or dict.fromkeys(_TIMEOUT_PHASES)).items()
        }
        return permit

    def _client_span(
        self, request: httpx2.Request, url: str, attempt: int
    ) -> AbstractContextManager[trace.Span]:
        """The attempt's CLIENT span, with OpenTelemetry's HTTP client attributes."""
        attributes: dict[str, Any] = {
            "http.request.method": request.method,
            "server.address": request.url.host,
            "server.port": request.url.port or 0,
            "url.full": url,
        }
        if attempt > 1:
            attributes["http.request.resend_count"] = attempt - 1
        return self._tracer.start_as_current_span(
            request.method,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )

    async def _refuse_oversized(
        self,
        response: httpx2.Response,
        request: httpx2.Request,
        host: str,
        downstream: Downstream,
        permit: Permit,
        span: trace.Span,
        started: float,
        attempt: int,
        url: str,
    ) -> None:
        """Fail the attempt, unread, when the declared body exceeds ``max_response_bytes``."""
        declared = response.headers.get("content-length", "")
        if not (declared.isdigit() and int(declared) > self._max_response_bytes):
            return
        await response.aclose()
        downstream.breaker.record(permit, failure=True)
        msg = f"declared response body of {declared} bytes exceeds the limit"
        error = ResponseTooLarge(msg, request=request)
        self._failed(request, host, downstream, None, error, span, started, attempt, url)

    async def _bound_body(
        self,
        response: httpx2.Response,
        request: httpx2.Request,
        deadline: float,
        timeouts: dict[str, float | None],
        end: _BodyEnd,
        downstream: Downstream,
        permit: Permit,
        span: trace.Span,
    ) -> None:
        """Make reading the body obey the size limit, decoded too, and a deadline: the call's,
        and at least one read timeout after the headers. A body in an encoding the client did
        not accept fails the attempt here, unread."""
        assert isinstance(response.stream, httpx2.AsyncByteStream)  # noqa: S101 - async transport
        try:
            decoder = decoder_for(response, limit=self._max_response_bytes, request=request)
        except UndecodableResponse as exc:
            await response.aclose()
            downstream.breaker.record(permit, failure=True)
            self._failed(
                request, end.host, downstream, None, exc, span, end.started, end.attempt, end.url
            )
        read_timeout = timeouts.get("read")
        body_deadline = (
            deadline if read_timeout is None else max(deadline, self._clock() + read_timeout)
        )
        response.stream = _BoundedBody(
            response.stream,
            request,
            limit=self._max_response_bytes,
            deadline=body_deadline,
            clock=self._clock,
            decoder=decoder,
            end=end,
        )

    def _account(
        self,
        response: httpx2.Response,
        request: httpx2.Request,
        host: str,
        span: trace.Span,
        duration: float,
        attempt: int,
        url: str,
    ) -> None:
        """Record the answer: the span's status, metrics, the log line."""
        status = response.status_code
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        self._observer.outbound(host, request.method, str(status), duration)
        log.info(
            "outbound.response",
            method=request.method,
            url=url,
            host=host,
            status=status,
            duration_ms=round(duration * 1000, 2),
            attempt=attempt,
        )

    @staticmethod
    async def _returned_or_retryable(
        response: httpx2.Response, request: httpx2.Request, downstream: Downstream
    ) -> httpx2.Response:
        """The response, or ``_Retryable`` (its body read and its connection released) when
        the policy retries its status."""
        reason = retry_reason(downstream.retry, request, response=response)
        if reason is None:
            return response
        await response.aread()
        await response.aclose()
        raise _Retryable(
            reason,
            response=response,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )

    def _failed(
        self,
        request: httpx2.Request,
        host: str,
        downstream: Downstream,
        permit: Permit | None,
        exc: httpx2.TransportError,
        span: trace.Span,
        started: float,
        attempt: int,
        url: str,
    ) -> NoReturn:
        """Record, log and classify a transport error; raise it, or ``_Retryable``."""
        duration = time.perf_counter() - started
        outcome = type(exc).__name__
        if permit is None:
            pass  # already recorded by the caller
        elif isinstance(exc, httpx2.PoolTimeout):
            downstream.breaker.release(permit)  # our pool, not the downstream, is exhausted
        else:
            downstream.breaker.record(permit, failure=True)
        span.set_status(Status(StatusCode.ERROR, outcome))
        self._observer.outbound(host, request.method, outcome, duration)
        log.warning(
            "outbound.error",
            method=request.method,
            url=url,
            host=host,
            error=outcome,
            duration_ms=round(duration * 1000, 2),
            attempt=attempt,
        )
        if isinstance(exc, httpx2.PoolTimeout):
            raise httpx2.PoolTimeout(
                f"No connection to {host} became free within the pool timeout: all "
                "max_connections are busy. Raise HTTP__MAX_CONNECTIONS or lower concurrency.",
                request=request,
            ) from exc
        reason = (
            None  # it would be the same again
            if isinstance(exc, ResponseTooLarge | UndecodableResponse)
            else retry_reason(downstream.retry, request, error=exc)
        )
        if reason is None:
            raise exc
        raise _Retryable(reason, error=exc) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()
