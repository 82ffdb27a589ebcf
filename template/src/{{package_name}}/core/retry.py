"""When an outbound call is retried, how long to wait, and how many retries a host may get.

stamina runs the attempts (counting them, sleeping, its testing switch); this module decides.
It adds what a generic retry library cannot know about HTTP: which methods are safe to resend,
which errors happened before anything was sent, which statuses are transient, ``Retry-After``,
and a per-host retry budget.
"""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

IDEMPOTENCY_KEY = "idempotency-key"
_DELTA_SECONDS = re.compile(r"[0-9]{1,12}")

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

    def may_resend(self, request: httpx.Request) -> bool:
        """Whether resending ``request`` after it may have reached the downstream is safe: an
        idempotent method, an ``Idempotency-Key``, or the caller's explicit opt-in; and a body
        that can be sent again."""
        override = request.extensions.get(RETRY_EXTENSION)
        if override is False:
            return False
        if not isinstance(request.stream, httpx.ByteStream):
            return False  # a streamed body was consumed by the first attempt
        return (
            override is True or request.method in self.methods or IDEMPOTENCY_KEY in request.headers
        )


# Errors raised before the request left this process: safe to resend for any method.
_NOT_SENT: tuple[type[Exception], ...] = (httpx.ConnectError, httpx.ConnectTimeout)
# Errors after the request may have been sent: resend only when ``may_resend``.
_MAYBE_SENT: tuple[type[Exception], ...] = (
    httpx.ReadTimeout,
    httpx.WriteTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)


def retry_reason(
    policy: RetryPolicy,
    request: httpx.Request,
    *,
    response: httpx.Response | None = None,
    error: Exception | None = None,
) -> str | None:
    """Why this outcome may be retried (``"503"``, ``"ConnectError"``), or None if it must not.

    ``PoolTimeout`` is never retried: it means this process ran out of connections, and
    retrying would only queue more work behind the same exhausted pool.
    """
    if request.extensions.get(RETRY_EXTENSION) is False:
        return None
    if error is not None:
        if isinstance(error, httpx.PoolTimeout):
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


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP-date), or None when
    it is absent or unusable (negative, garbage). A date in the past means zero."""
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None  # HTTP-dates are always GMT; a zone-less value is not one
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


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
