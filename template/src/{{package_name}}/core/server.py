"""The uvicorn server ``python -m <package>`` runs, with an optional readiness drain.

Template-owned. With ``shutdown_delay`` above 0, the first SIGTERM (or SIGINT) does not start
uvicorn's graceful shutdown at once: ``/readyz`` answers 503 for ``shutdown_delay`` seconds while
every other request, on new connections too, is served as before, so a load balancer that polls
readiness stops sending work before the listening socket closes. Then the normal graceful drain
runs (``graceful_shutdown_timeout``). A second signal during the delay stops at once, as a second
Ctrl+C does in uvicorn. On Kubernetes a ``preStop`` sleep does the same job (see the docs).
"""

from __future__ import annotations

import asyncio
import socket
from types import FrameType

import structlog
import uvicorn
from fastapi import FastAPI

log = structlog.get_logger("shutdown")


def is_draining(app: FastAPI) -> bool:
    """Whether ``app`` is in its shutdown delay (``/readyz`` answers 503)."""
    return bool(getattr(app.state, "draining", False))


class Server(uvicorn.Server):
    """``uvicorn.Server`` that turns unready for ``shutdown_delay`` seconds before draining."""

    def __init__(self, config: uvicorn.Config, *, app: FastAPI, shutdown_delay: float) -> None:
        super().__init__(config)
        self._app = app
        self.shutdown_delay = shutdown_delay
        self.loop: asyncio.AbstractEventLoop | None = None  # set by serve()
        self._delaying = False

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """A signal handler: it only sets flags and schedules; the loop does the rest."""
        if self._delaying and not self.should_exit:
            # A second signal during the delay: stop now, skipping the drain.
            self.force_exit = True
        if self._delaying or self.should_exit or self.shutdown_delay <= 0 or self.loop is None:
            super().handle_exit(sig, frame)
            return
        self._delaying = True
        self._app.state.draining = True
        # Nothing is logged here: a signal handler must not take the log output's lock.
        self.loop.call_soon_threadsafe(self._start_delay, sig)

    def _start_delay(self, sig: int) -> None:
        log.info("shutdown.unready", signal=sig, shutdown_delay=self.shutdown_delay)
        assert self.loop is not None  # noqa: S101 - set in serve() before signals are handled
        self.loop.call_later(self.shutdown_delay, self._end_delay, sig)

    def _end_delay(self, sig: int) -> None:
        if not self.should_exit:
            log.info("shutdown.draining", signal=sig)
            super().handle_exit(sig, None)
