"""A circuit breaker per downstream host: stop calling a host that is failing, probe it after a
pause, and close again when it recovers.

Written here rather than taken from a library because none we found has these semantics:
a count-based sliding failure-rate window with a minimum number of calls, a bounded number of
half-open probes with fast failure for everyone else, and asyncio-safe state without locks
(purgatory counts consecutive failures and lets every caller probe; pybreaker supports async
only through tornado; aiobreaker is unmaintained). See docs/resilience.md.

Every method is synchronous and never awaits, so under asyncio each state change is atomic: no
lock is needed and no update is lost.
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


class BreakerState(enum.Enum):
    """CLOSED lets calls through, OPEN fails them fast, HALF_OPEN lets a few probes through."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerPolicy(BaseModel):
    """When a host's breaker opens and how it recovers. These are the ``breaker`` settings; a
    host's entry in ``downstream_overrides`` may change any of them."""

    model_config = ConfigDict(frozen=True)

    window_size: int = Field(20, ge=1, description="Calls in the sliding failure-rate window.")
    minimum_calls: int = Field(10, ge=1, description="Calls in the window before it may open.")
    failure_rate_threshold: float = Field(
        0.5, gt=0, le=1, description="Failure share of the window that opens the circuit."
    )
    open_seconds: float = Field(15.0, gt=0, description="Seconds open before probing.")
    half_open_probes: int = Field(3, ge=1, description="Probe calls let through half-open.")
    failure_statuses: frozenset[int] = Field(
        frozenset(range(500, 600)), description="Response statuses that count as failures (5xx)."
    )

    def counts_as_failure(self, status: int) -> bool:
        """Whether a response status is a failure of the downstream (never a 4xx)."""
        return status in self.failure_statuses and status >= 500


class CircuitOpenError(Exception):
    """The circuit for ``host`` is open: the call was not sent.

    ``retry_after`` is how many seconds remain before the breaker lets probes through.
    """

    def __init__(self, host: str, retry_after: float) -> None:
        super().__init__(f"circuit open for {host}; retry in {retry_after:.1f}s")
        self.host = host
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to make one call; it belongs to the breaker state it was issued in."""

    generation: int
    probe: bool


TransitionHook = Callable[[str, BreakerState, BreakerState], None]


class CircuitBreaker:
    """The breaker of one downstream host."""

    def __init__(
        self,
        host: str,
        policy: BreakerPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_transition: TransitionHook | None = None,
    ) -> None:
        self.host = host
        self.policy = policy
        self._clock = clock
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        self._generation = 0
        # True for a failed call; the newest ``window_size`` outcomes while closed.
        self._window: deque[bool] = deque(maxlen=policy.window_size)
        self._failures = 0
        self._opened_at = 0.0
        self._probes_issued = 0
        self._probes_succeeded = 0

    @property
    def state(self) -> BreakerState:
        """The current state; an OPEN breaker whose pause is over reads as HALF_OPEN."""
        self._maybe_half_open()
        return self._state

    def retry_after(self) -> float:
        """Seconds until an open breaker lets probes through (0 when not open)."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.policy.open_seconds - self._clock())

    def acquire(self) -> Permit:
        """Ask to make a call; raises ``CircuitOpenError`` at once when the call must not go."""
        self._maybe_half_open()
        if self._state is BreakerState.CLOSED:
            return Permit(self._generation, probe=False)
        if self._state is BreakerState.HALF_OPEN:
            if self._probes_issued < self.policy.half_open_probes:
                self._probes_issued += 1
                return Permit(self._generation, probe=True)
            # Probes are out; everyone else fails fast until they report back.
            raise CircuitOpenError(self.host, retry_after=0.0)
        raise CircuitOpenError(self.host, retry_after=self.retry_after())

    def record(self, permit: Permit, *, failure: bool) -> None:
        """Report how a permitted call went. Reports from an earlier state are ignored, so a
        slow call that started before the circuit opened cannot close it."""
        if permit.generation != self._generation:
            return
        if self._state is BreakerState.HALF_OPEN:
            if failure:
                self._open()
                return
            self._probes_succeeded += 1
            if self._probes_succeeded >= self.policy.half_open_probes:
                self._transition(BreakerState.CLOSED)
            return
        if self._state is BreakerState.CLOSED:
            if len(self._window) == self._window.maxlen and self._window[0]:
                self._failures -= 1
            self._window.append(failure)
            self._failures += failure
            calls = len(self._window)
            if (
                calls >= self.policy.minimum_calls
                and self._failures / calls >= self.policy.failure_rate_threshold
            ):
                self._open()

    def release(self, permit: Permit) -> None:
        """Give back a permit whose call ended without an outcome (cancelled, or refused
        locally): a half-open probe slot is freed for the next caller."""
        if permit.generation == self._generation and permit.probe:
            self._probes_issued -= 1

    def snapshot(self) -> dict[str, object]:
        """State for /readyz and logs."""
        state = self.state
        return {
            "state": state.value,
            "retry_after": math.ceil(self.retry_after()),
            "window_calls": len(self._window),
            "window_failures": self._failures,
        }

    def _maybe_half_open(self) -> None:
        if (
            self._state is BreakerState.OPEN
            and self._clock() >= self._opened_at + self.policy.open_seconds
        ):
            self._transition(BreakerState.HALF_OPEN)

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._transition(BreakerState.OPEN)

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        self._state = new
        self._generation += 1
        self._window.clear()
        self._failures = 0
        self._probes_issued = 0
        self._probes_succeeded = 0
        if self._on_transition is not None and old is not new:
            self._on_transition(self.host, old, new)
