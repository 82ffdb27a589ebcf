"""The observer seam between request handling and metrics.

The middleware and the outbound transport report what happened to an ``Observer``; they do not
know about Prometheus. With metrics turned off the service runs with ``NULL_OBSERVER``, and a
team that prefers another metrics backend implements this protocol instead.
"""

from __future__ import annotations

from typing import Protocol


class Observer(Protocol):
    """Receives what happened to inbound requests, outbound attempts, retries and breakers."""

    def inbound(self, method: str, route: str, status: int, duration_s: float) -> None:
        """An inbound request finished (``route`` is the path template, not the raw path)."""

    def outbound(self, host: str, method: str, outcome: str, duration_s: float) -> None:
        """An outbound attempt finished: ``outcome`` is the status code or the error's name."""

    def retry(self, host: str, reason: str) -> None:
        """A retry of a call to ``host`` was scheduled (``reason``: status or error name)."""

    def retry_budget_exhausted(self, host: str) -> None:
        """A retry to ``host`` was refused because its retry budget was empty."""

    def breaker_state(self, host: str, state: str) -> None:
        """The breaker of ``host`` is now in ``state`` (closed, open, half_open)."""

    def breaker_transition(self, host: str, old: str, new: str) -> None:
        """The breaker of ``host`` moved from ``old`` to ``new``."""


class _NullObserver:
    def inbound(self, method: str, route: str, status: int, duration_s: float) -> None:
        return None

    def outbound(self, host: str, method: str, outcome: str, duration_s: float) -> None:
        return None

    def retry(self, host: str, reason: str) -> None:
        return None

    def retry_budget_exhausted(self, host: str) -> None:
        return None

    def breaker_state(self, host: str, state: str) -> None:
        return None

    def breaker_transition(self, host: str, old: str, new: str) -> None:
        return None


NULL_OBSERVER: Observer = _NullObserver()
