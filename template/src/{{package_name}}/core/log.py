"""Structured logging: structlog for our own events, with stdlib logging (uvicorn, httpx)
routed through the same processors so every line has one shape.

``log_format="json"`` writes one JSON object per line (production); ``"console"`` writes
coloured, aligned lines for development. Request-scoped fields (request_id) come from
contextvars; trace_id and span_id come from the current OpenTelemetry span.

Loggers are cached on first use (structlog's ``cache_logger_on_first_use``), which saves
rebuilding a bound logger on every call. A cached logger keeps the objects it was built with,
so reconfiguring (tests send lines to a buffer, or change the format or level) changes those
objects in place instead of replacing them: the processor list, the output the lines go to,
and the level threshold.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

import orjson
import structlog
from opentelemetry import trace
from structlog.tracebacks import ExceptionDictTransformer
from structlog.types import EventDict, Processor, WrappedLogger

from .redact import redact_text
from .settings import PlatformSettings

# Libraries that log one INFO line per request: ours already says it, with redaction.
_QUIET_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "uvicorn.access")


def add_trace_context(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Add the current span's trace_id and span_id, when there is one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
        event_dict["span_id"] = format(context.span_id, "016x")
    return event_dict


def redact_exception(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Redact URL secrets in a formatted exception: messages quote URLs (httpx's
    ``HTTPStatusError`` quotes the whole request URL, query included)."""
    if "exception" in event_dict:
        event_dict["exception"] = _redact_strings(event_dict["exception"])
    return event_dict


def _redact_strings(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, list):
        return [_redact_strings(item) for item in value]
    if isinstance(value, dict):
        return {key: _redact_strings(item) for key, item in value.items()}
    return value


def _orjson_dumps(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str).decode()


class _Output:
    """Where structlog writes rendered lines: one object per process, pointed at the stream
    that the latest ``configure_logging`` named. One write and one flush per line."""

    def __init__(self, stream: TextIO) -> None:
        self._lock = threading.Lock()  # lines from other threads must not interleave
        self.stream = stream

    def msg(self, message: str) -> None:
        with self._lock:
            self.stream.write(message + "\n")
            self.stream.flush()

    log = debug = info = warn = warning = error = err = critical = exception = fatal = msg


_OUTPUT = _Output(sys.stdout)
_PROCESSORS: list[Processor] = []
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


class _LevelFilter:
    """Drops events below the configured level. A processor rather than structlog's filtering
    logger class, whose level a cached logger would keep after reconfiguration."""

    def __init__(self) -> None:
        self.threshold = logging.INFO

    def __call__(self, _: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        if _LEVELS.get(method_name, logging.INFO) < self.threshold:
            raise structlog.DropEvent
        return event_dict


_LEVEL_FILTER = _LevelFilter()
_TRACEBACK_DICT = ExceptionDictTransformer(show_locals=False)


def _output(*_: Any) -> _Output:
    return _OUTPUT


def configure_logging(settings: PlatformSettings, stream: TextIO | None = None) -> None:
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
    # Tracebacks are formatted here, without frame locals (a local can hold a header or a
    # token), and then redacted, before either renderer sees them.
    if settings.log_format == "json":
        shared.append(structlog.processors.ExceptionRenderer(_TRACEBACK_DICT))
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    else:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.dev.ConsoleRenderer()
    shared.append(redact_exception)

    # In place: loggers cached on first use hold these very objects.
    _OUTPUT.stream = out
    _LEVEL_FILTER.threshold = level
    _PROCESSORS[:] = [_LEVEL_FILTER, *shared, renderer]
    structlog.configure(
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        logger_factory=_output,
        cache_logger_on_first_use=True,
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
