"""The platform: the outbound chain, resilience, logging, tracing, metrics, errors and probes.

Template-owned: `copier update` maintains every module here, and `make lint` reports local
edits (see ``.template-ownership.yml``). Change behaviour through the extension points instead:
``service.configure`` (routers, middleware, handlers, readiness checks, resources),
``settings.Settings`` (your settings, per-downstream ``retry``/``breaker``) and the environment.

The names below are the platform's public API: team code imports them from here
(``from .core import SharedHttpClient, downstream_errors``), not from the modules, which may
move between releases. ``tests/core/test_public_api.py`` pins the list.
"""

from __future__ import annotations

from .app import Extensions
from .breaker import CircuitOpenError
from .downstream import downstream_errors, raise_for_downstream_status
from .errors import DownstreamError, DownstreamNotFound, DownstreamTimeout, DownstreamUnavailable
from .http_client import SharedHttpClient, build_http_client
from .problems import problem_doc
from .retry import NO_RETRY
from .settings import DownstreamSettings, PlatformSettings

__all__ = [
    "NO_RETRY",
    "CircuitOpenError",
    "DownstreamError",
    "DownstreamNotFound",
    "DownstreamSettings",
    "DownstreamTimeout",
    "DownstreamUnavailable",
    "Extensions",
    "PlatformSettings",
    "SharedHttpClient",
    "build_http_client",
    "downstream_errors",
    "problem_doc",
    "raise_for_downstream_status",
]
