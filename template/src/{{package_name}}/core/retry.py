"""When an outbound call is retried, how long to wait, and how many retries a host may get.

The transport's retry loop runs the attempts; this module decides. It adds what a generic retry
library cannot know about HTTP: which methods are safe to resend,
which errors happened before anything was sent, which statuses are transient, ``Retry-After``,
and a per-host retry budget.
"""

from __future__ import annotations

import calendar
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2
from pydantic import BaseModel, ConfigDict, Field

IDEMPOTENCY_KEY = "idempotency-key"
_DELTA_SECONDS = re.compile(r"[0-9]{1,12}")
# HTTP-date, RFC 9110 section 5.6.7: the preferred IMF-fixdate and the two obsolete forms, which
# recipients MUST accept too. All three are GMT, the asctime form without saying so.
_MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec"
_TIME = r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
_HTTP_DATES = (
    # IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
    re.compile(
        rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), (?P<day>[0-9]{{2}}) (?P<month>{_MONTHS}) "
        rf"(?P<year>[0-9]{{4}}) {_TIME} GMT"
    ),
    # rfc850-date: Sunday, 06-Nov-94 08:49:37 GMT
    re.compile(
        rf"(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day, (?P<day>[0-9]{{2}})-(?P<month>{_MONTHS})-"
        rf"(?P<year>[0-9]{{2}}) {_TIME} GMT"
    ),
    # asctime-date: Sun Nov  6 08:49:37 1994 (a one-digit day is padded with a space)
    re.compile(
        rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?P<month>{_MONTHS}) (?P<day>[0-9]{{2}}| [0-9]) "
        rf"{_TIME} (?P<year>[0-9]{{4}})"
    ),
)

# Request extensions a caller sets to override the policy for one call:
#   client.get(url, extensions=NO_RETRY)          never retry this call
#   client.post(url, extensions=RETRY_UNSAFE)     retry this non-idempotent call anyway
RETRY_EXTENSION = "retry"
NO_RETRY: Mapping[str, Any] = {RETRY_EXTENSION: False}
RETRY_UNSAFE: Mapping[str, Any] = {RETRY_EXTENSION: True}


class RetryPolicy(BaseModel):
    """The retry rules for one downstream host. These are the ``retry`` settings; a host's entry
    in ``downstream_overrides`` may change any of them."""

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(3, ge=1, le=10, description="Attempts per call, the first included.")
    deadline: float = Field(
        10.0, gt=0, description="Seconds for the whole call: every attempt and every wait."
    )
    backoff_initial: float = Field(0.1, ge=0, description="Backoff ceiling before the 1st retry.")
    backoff_max: float = Field(2.0, ge=0, description="Largest backoff ceiling.")
    retry_after_cap: float = Field(
        5.0, ge=0, description="Longest Retry-After honoured; a longer one ends the call."
    )
    methods: frozenset[str] = Field(
        frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}),
        description="Methods safe to resend. POST/PATCH need an Idempotency-Key or an opt-in.",
    )
    statuses: frozenset[int] = Field(
        frozenset({429, 502, 503, 504}), description="Statuses retried; add 500 to retry it too."
    )
    budget_ratio: float = Field(
        0.2, ge=0, le=1, description="Retries a host earns per original request."
    )
    budget_burst: int = Field(10, ge=0, description="Retries a quiet host may use at once.")

    def may_resend(self, request: httpx2.Request) -> bool:
        """Whether resending ``request`` after it may have reached the downstream is safe: an
        idempotent method, an ``Idempotency-Key``, or the caller's explicit opt-in; and a body
        that can be sent again."""
        override = request.extensions.get(RETRY_EXTENSION)
        if override is False:
            return False
        if not isinstance(request.stream, httpx2.ByteStream):
            return False  # a streamed body was consumed by the first attempt
        return (
            override is True or request.method in self.methods or IDEMPOTENCY_KEY in request.headers
        )


# Errors raised before the request left this process: safe to resend for any method.
_NOT_SENT: tuple[type[Exception], ...] = (httpx2.ConnectError, httpx2.ConnectTimeout)
# Errors after the request may have been sent: resend only when ``may_resend``.
_MAYBE_SENT: tuple[type[Exception], ...] = (
    httpx2.ReadTimeout,
    httpx2.WriteTimeout,
    httpx2.ReadError,
    httpx2.WriteError,
    httpx2.RemoteProtocolError,
)


def retry_reason(
    policy: RetryPolicy,
    request: httpx2.Request,
    *,
    response: httpx2.Response | None = None,
    error: Exception | None = None,
) -> str | None:
    """Why this outcome may be retried (``"503"``, ``"ConnectError"``), or None if it must not.

    ``PoolTimeout`` is never retried: it means this process ran out of connections, and
    retrying would only queue more work behind the same exhausted pool.
    """
    if request.extensions.get(RETRY_EXTENSION) is False:
        return None
    if error is not None:
        if isinstance(error, httpx2.PoolTimeout):
            return None
        if isinstance(error, _NOT_SENT):
            return type(error).__name__
        if isinstance(error, _MAYBE_SENT) and policy.may_resend(request):
            return type(error).__name__
        return None
    if response is not None and response.status_code in policy.statuses:
        return str(response.status_code) if policy.may_resend(request) else None
    return None


def full_jitter_backoff(
    retry_number: int, policy: RetryPolicy, rng: Callable[[], float] = random.random
) -> float:
    """Capped exponential backoff with full jitter: uniform in [0, min(max, initial * 2^n)).

    Full jitter spreads the retries of many callers that failed at the same moment, where
    additive jitter keeps them bunched around the same exponential steps.
    """
    ceiling = min(policy.backoff_max, policy.backoff_initial * 2.0 ** (retry_number - 1))
    return float(ceiling * rng())


def parse_http_date(text: str, now: float | None = None) -> float | None:
    """The POSIX timestamp of an HTTP-date in any of its three forms (RFC 9110 section 5.6.7),
    or None when ``text`` is not one or names no real moment."""
    for pattern in _HTTP_DATES:
        match = pattern.fullmatch(text)
        if match is not None:
            break
    else:
        return None
    current = time.time() if now is None else now
    year = int(match["year"])
    two_digit_year = len(match["year"]) == 2
    if two_digit_year:
        year += time.gmtime(current).tm_year // 100 * 100 + 100
    month = _MONTHS.split("|").index(match["month"]) + 1
    day, hour = int(match["day"]), int(match["hour"])
    minute, second = int(match["minute"]), int(match["second"])
    if not (day >= 1 and hour < 24 and minute < 60 and second < 61):  # 60: a leap second
        return None
    # rfc850-date: a two-digit year that appears to be more than 50 years in the future is the
    # most recent past year with the same last two digits (RFC 9110 section 5.6.7).
    while two_digit_year and (year, month, day, hour, minute, second) > _fifty_years_after(current):
        year -= 100
    if day > calendar.monthrange(year, month)[1]:
        return None
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def _fifty_years_after(timestamp: float) -> tuple[int, ...]:
    now = time.gmtime(timestamp)
    return (now.tm_year + 50, now.tm_mon, now.tm_mday, now.tm_hour, now.tm_min, now.tm_sec)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date, RFC 9110 section
    10.2.3), or None when it is absent or unusable (negative, garbage, not one of the three
    HTTP-date forms). A date in the past means zero."""
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    current = time.time() if now is None else now
    when = parse_http_date(text, current)
    if when is None:
        return None
    return max(0.0, when - current)


@dataclass(slots=True)
class RetryBudget:
    """A per-host token bucket that bounds retries to a share of the original requests.

    Each original request adds ``ratio`` tokens (up to ``burst``); each retry takes one. When a
    downstream fails every call, it therefore sees at most ``1 + ratio`` times the incoming
    request rate (plus ``burst`` once), not ``max_attempts`` times. The bucket starts full, so a
    quiet service still retries an occasional transient failure.
    """

    ratio: float
    burst: int
    tokens: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def deposit(self) -> None:
        """Record one original request."""
        self.tokens = min(float(self.burst), self.tokens + self.ratio)

    def try_spend(self) -> bool:
        """Take a token for one retry; False when the budget is exhausted."""
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False
