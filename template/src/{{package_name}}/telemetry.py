"""The observer seam between request handling and metrics.

The middleware and the outbound transport report what happened to an ``Observer``; they do not
know about Prometheus. With metrics turned off the service runs with ``NULL_OBSERVER``, and a
team that prefers another metrics backend implements this protocol instead.
"""

from __future__ import annotations

from typing import Protocol


class Observer(Protocol):
    """Receives one call per finished inbound request and per outbound attempt."""

    def inbound(self, method: str, route: str, status: int, duration_s: float) -> None:
        """An inbound request finished (``route`` is the path template, not the raw path)."""

    def outbound(self, host: str, method: str, outcome: str, duration_s: float) -> None:
        """An outbound attempt finished: ``outcome`` is the status code or the error's name."""


class _NullObserver:
    def inbound(self, method: str, route: str, status: int, duration_s: float) -> None:
        return None

    def outbound(self, host: str, method: str, outcome: str, duration_s: float) -> None:
        return None


NULL_OBSERVER: Observer = _NullObserver()
