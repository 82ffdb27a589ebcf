"""The outbound chain of the shared client, in one place.

Every request sent through the shared client passes ``OutboundTransport.handle_async_request``.
Per call it resolves the host's policy and deadline, then for each attempt:

1. asks the host's circuit breaker (an open circuit raises ``CircuitOpenError``: nothing is sent,
   nothing is retried);
2. opens a CLIENT span and injects ``traceparent``/``tracestate`` (W3C Trace Context);
3. sends through the pool beneath (``core/pool.py``), with timeouts clipped to the time left;
4. classifies the outcome, records it in the breaker, writes one log line and reports metrics;
   bounds the body (size, decoded size, deadline), and counts a body that fails as the
   downstream's failure;
5. decides on another attempt through ``retry`` (method safety, Retry-After, deadline, the
   host's retry budget), in a loop of its own that keeps out of stamina's instrumentation
   hooks but follows stamina's active and testing switches.

The steps of an attempt share one ``_Attempt``: the call's request, host, per-host state and
deadline, and the attempt's number, breaker permit, span and start time.

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
from opentelemetry.trace import INVALID_SPAN, SpanKind, Status, StatusCode
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
    even under a 200: ``_Attempt.report`` records it in the breaker and writes its log line.

    It keeps no reference to its response: the response holds it (through httpx2's client's
    stream wrapper, which keeps ``elapsed`` itself), so reference counting frees the response,
    its request and the pool's objects as soon as the caller lets go, with no cycle for the
    cyclic garbage collector.
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
        end: _Attempt,
    ) -> None:
        self._inner = inner
        self._request = request
        self._limit = limit
        self._deadline = deadline
        self._clock = clock
        self._decoder = decoder
        self._end: _Attempt | None = end

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


@dataclass(slots=True)
class _Attempt:
    """One attempt of a call: what its steps share, and what the end of its response body
    reports to (``report``). The first attempt is made per call; each retry takes ``next``."""

    request: httpx2.Request
    host: str
    downstream: Downstream
    deadline: float
    timeouts: dict[str, float | None]  # the call's own, before clipping to the deadline
    url: str  # redacted, for logs and spans
    observer: Observer
    number: int = 1
    # The breaker's permit until the attempt's outcome is recorded (or the permit released).
    permit: Permit | None = None
    span: trace.Span = INVALID_SPAN
    started: float = 0.0

    def next(self) -> _Attempt:
        """The call's next attempt."""
        return _Attempt(
            self.request,
            self.host,
            self.downstream,
            self.deadline,
            self.timeouts,
            self.url,
            self.observer,
            self.number + 1,
        )

    def settle(self, *, failure: bool) -> None:
        """Record the attempt's outcome in the breaker, unless it is recorded already."""
        permit, self.permit = self.permit, None
        if permit is not None:
            self.downstream.breaker.record(permit, failure=failure)

    def release(self) -> None:
        """Give the permit back with no outcome (cancelled, or the pool's own failure)."""
        permit, self.permit = self.permit, None
        if permit is not None:
            self.downstream.breaker.release(permit)

    def report(self, error: httpx2.TransportError | None, *, abandoned: bool = False) -> None:
        """The end of the response body: the breaker's outcome of the attempt (when its status
        was no failure, the outcome waited for the body), and for a body that failed, the
        ``outbound.error`` line and the error as the attempt's outcome in metrics."""
        permit, self.permit = self.permit, None
        if permit is not None:
            if abandoned:
                self.downstream.breaker.release(permit)
            else:
                self.downstream.breaker.record(permit, failure=error is not None)
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
            attempt=self.number,
            phase="body",
        )


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
        first = _Attempt(
            request,
            host,
            downstream,
            self._clock() + downstream.retry.deadline,
            dict(request.extensions.get("timeout") or {}),
            redact_url(request.url),
            self._observer,
        )
        # The first attempt runs outside the retry loop: the success path builds nothing for it.
        try:
            return await self._attempt(first)
        except _Retryable as failure:
            first_failure = failure
        try:
            return await self._retry(first, first_failure)
        except _Retryable as final:
            if final.response is not None:
                return final.response
            if final.error is not None:
                raise final.error from None
            raise

    async def _retry(self, first: _Attempt, failure: _Retryable) -> httpx2.Response:
        """Attempts 2..N, after the ``first`` failed with ``failure``.

        The loop is this module's, not stamina's, so that stamina's instrumentation hooks stay
        the service's own: this chain logs and counts its retries itself, with host and reason.
        It follows stamina's process switches: ``stamina.set_active(False)`` turns its retries
        off, and in ``stamina.set_testing(True)`` its waits are skipped."""
        request = first.request
        no_retry = request.extensions.get(RETRY_EXTENSION) is False or not stamina.is_active()
        max_attempts = 1 if no_retry else first.downstream.retry.max_attempts
        attempt = first
        while True:
            wait = self._next_wait(attempt, failure, max_attempts)
            if wait is None:
                raise failure
            if not stamina.is_testing():
                await asyncio.sleep(wait)
            attempt = attempt.next()
            try:
                return await self._attempt(attempt)
            except _Retryable as retryable:
                failure = retryable

    def _next_wait(self, attempt: _Attempt, failure: _Retryable, max_attempts: int) -> float | None:
        """Seconds to wait before the attempt after ``attempt``, or None to stop with
        ``failure``."""
        if attempt.number >= max_attempts:
            return None
        host, downstream = attempt.host, attempt.downstream
        policy = downstream.retry
        if failure.retry_after is not None:
            wait, source = failure.retry_after, "retry-after"
            if wait > policy.retry_after_cap:
                self._give_up(host, failure.reason, "retry_after_over_cap", wait)
                return None
        else:
            wait, source = full_jitter_backoff(attempt.number, policy, self._rng), "backoff"
        if self._clock() + wait >= attempt.deadline:
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
            method=attempt.request.method,
            reason=failure.reason,
            attempt=attempt.number,
            wait_s=round(wait, 3),
            wait_source=source,
        )
        return float(wait)

    def _give_up(self, host: str, reason: str, why: str, wait: float) -> None:
        log.info("outbound.retry_skipped", host=host, reason=reason, why=why, wait_s=round(wait, 3))

    async def _attempt(self, attempt: _Attempt) -> httpx2.Response:
        """One attempt, step by step: admit it, send it inside a client span with the trace
        headers, check the answer's size, account for it (breaker, span, metrics, log line),
        then return it or raise ``_Retryable`` for the retry loop to decide on."""
        self._admit(attempt)
        request = attempt.request
        with self._client_span(attempt) as span:
            attempt.span = span
            # The W3C propagator writes traceparent, and tracestate when the context has one.
            _propagator.inject(request.headers)
            attempt.started = time.perf_counter()
            try:
                response = await self._inner.handle_async_request(request)
            except httpx2.TransportError as exc:
                self._failed(attempt, exc)
            except BaseException:
                attempt.release()  # cancelled: no outcome to record
                raise
            duration = time.perf_counter() - attempt.started
            await self._refuse_oversized(response, attempt)
            # A failure status is the outcome now; any other waits for the body's end.
            failed = attempt.downstream.breaker.policy.counts_as_failure(response.status_code)
            await self._bound_body(response, attempt)
            if failed:
                attempt.settle(failure=True)
            self._account(response, attempt, duration)
            return await self._returned_or_retryable(response, attempt)

    def _admit(self, attempt: _Attempt) -> None:
        """The breaker's permit for this attempt (``CircuitOpenError`` if none), and every
        phase's timeout clipped to the time left, so that the deadline bounds the call."""
        breaker = attempt.downstream.breaker
        permit = breaker.acquire()
        remaining = attempt.deadline - self._clock()
        if remaining <= 0:
            breaker.release(permit)
            raise DeadlineExceeded("deadline exceeded before the attempt", request=attempt.request)
        attempt.permit = permit
        attempt.request.extensions["timeout"] = {
            phase: remaining if limit is None else min(limit, remaining)
            for phase, limit in (attempt.timeouts or dict.fromkeys(_TIMEOUT_PHASES)).items()
        }

    def _client_span(self, attempt: _Attempt) -> AbstractContextManager[trace.Span]:
        """The attempt's CLIENT span, with OpenTelemetry's HTTP client attributes."""
        request = attempt.request
        attributes: dict[str, Any] = {
            "http.request.method": request.method,
            "server.address": request.url.host,
            "server.port": request.url.port or 0,
            "url.full": attempt.url,
        }
        if attempt.number > 1:
            attributes["http.request.resend_count"] = attempt.number - 1
        return self._tracer.start_as_current_span(
            request.method,
            kind=SpanKind.CLIENT,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        )

    async def _refuse_oversized(self, response: httpx2.Response, attempt: _Attempt) -> None:
        """Fail the attempt, unread, when the declared body exceeds ``max_response_bytes``."""
        declared = response.headers.get("content-length", "")
        if not (declared.isdigit() and int(declared) > self._max_response_bytes):
            return
        await response.aclose()
        msg = f"declared response body of {declared} bytes exceeds the limit"
        self._failed(attempt, ResponseTooLarge(msg, request=attempt.request))

    async def _bound_body(self, response: httpx2.Response, attempt: _Attempt) -> None:
        """Make reading the body obey the size limit, decoded too, and a deadline: the call's,
        and at least one read timeout after the headers. A body in an encoding the client did
        not accept fails the attempt here, unread."""
        assert isinstance(response.stream, httpx2.AsyncByteStream)  # noqa: S101 - async transport
        request = attempt.request
        try:
            decoder = decoder_for(response, limit=self._max_response_bytes, request=request)
        except UndecodableResponse as exc:
            await response.aclose()
            self._failed(attempt, exc)
        read_timeout = attempt.timeouts.get("read")
        deadline = attempt.deadline
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
            end=attempt,
        )

    def _account(self, response: httpx2.Response, attempt: _Attempt, duration: float) -> None:
        """Record the answer: the span's status, metrics, the log line."""
        status = response.status_code
        span = attempt.span
        span.set_attribute("http.response.status_code", status)
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        method = attempt.request.method
        self._observer.outbound(attempt.host, method, str(status), duration)
        log.info(
            "outbound.response",
            method=method,
            url=attempt.url,
            host=attempt.host,
            status=status,
            duration_ms=round(duration * 1000, 2),
            attempt=attempt.number,
        )

    @staticmethod
    async def _returned_or_retryable(
        response: httpx2.Response, attempt: _Attempt
    ) -> httpx2.Response:
        """The response, or ``_Retryable`` (its body read and its connection released) when
        the policy retries its status."""
        reason = retry_reason(attempt.downstream.retry, attempt.request, response=response)
        if reason is None:
            return response
        await response.aread()
        await response.aclose()
        raise _Retryable(
            reason,
            response=response,
            retry_after=parse_retry_after(response.headers.get("retry-after")),
        )

    def _failed(self, attempt: _Attempt, exc: httpx2.TransportError) -> NoReturn:
        """Record, log and classify a transport error; raise it, or ``_Retryable``."""
        duration = time.perf_counter() - attempt.started
        outcome = type(exc).__name__
        host, request = attempt.host, attempt.request
        if isinstance(exc, httpx2.PoolTimeout):
            attempt.release()  # our pool, not the downstream, is exhausted
        else:
            attempt.settle(failure=True)
        attempt.span.set_status(Status(StatusCode.ERROR, outcome))
        self._observer.outbound(host, request.method, outcome, duration)
        log.warning(
            "outbound.error",
            method=request.method,
            url=attempt.url,
            host=host,
            error=outcome,
            duration_ms=round(duration * 1000, 2),
            attempt=attempt.number,
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
            else retry_reason(attempt.downstream.retry, request, error=exc)
        )
        if reason is None:
            raise exc
        raise _Retryable(reason, error=exc) from exc

    async def aclose(self) -> None:
        await self._inner.aclose()
