"""Structured logging: structlog for our own events, with stdlib logging (uvicorn, httpx)
routed through the same processors so every line has one shape.

``log_format="json"`` writes one JSON object per line (production); ``"console"`` writes
coloured, aligned lines for development. Request-scoped fields (request_id) come from
contextvars; trace_id and span_id come from the current OpenTelemetry span.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import orjson
import structlog
from opentelemetry import trace
from structlog.types import EventDict, Processor, WrappedLogger

from .settings import Settings

# Libraries that log one INFO line per request: ours already says it, with redaction.
_QUIET_LOGGERS = ("httpx", "httpx2", "httpcore", "uvicorn.access")


def add_trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add the current span's trace_id and span_id, when there is one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


def _orjson_dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Configure structlog and stdlib logging for the process; safe to call again.

    ``stream`` defaults to stdout; tests pass a buffer to read the lines back.
    """
    out = stream or sys.stdout
    level = logging.getLevelName(settings.log_level)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_context,
    ]
    renderer: Processor
    if settings.log_format == "json":
        shared.append(structlog.processors.dict_tracebacks)
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        renderer = structlog.dev.ConsoleRenderer()

    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )

    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # uvicorn installs its own handlers unless told not to; make sure its lines reach ours.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
