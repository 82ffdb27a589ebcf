"""W3C Trace Context extraction, exactly as the W3C conformance tests expect.

The stock OpenTelemetry propagator gets several of those cases wrong (a traceparent sent twice
is continued; it still checks tracestate keys against the 2021 grammar, so keys the current text
allows make it drop the whole list). This module parses the inbound headers itself and hands
OpenTelemetry a ready ``SpanContext``; injection on outbound calls stays OpenTelemetry's.

Rules (W3C Trace Context, the current editor's draft, https://w3c.github.io/trace-context/,
"Trace Context HTTP Headers Format"; its conformance suite is the reference):

- traceparent: ``version-traceid-parentid-flags``, lowercase hex only, optional surrounding
  spaces and tabs. Version ``ff`` is invalid; version ``00`` has exactly four fields; a higher
  (future) version may carry more fields after a ``-``. All-zero trace or parent ids are invalid.
  A traceparent sent more than once is invalid. Invalid means: start a new trace, and drop
  tracestate.
- tracestate ("tracestate Header Field Values"): all headers joined into one list; empty members
  are skipped; each member is ``key=value``. A key ("Key") is 1-256 characters: a lowercase
  letter or digit, then lowercase letters, digits and ``_ - * / @`` (``@`` may appear anywhere
  after the first character, any number of times: the old ``tenant@system`` split and its
  14-character system limit are gone). A duplicated key does not invalidate the list: "vendors
  MAY also discard duplicate keys" ("Mutating the tracestate Field"), and this module keeps the
  first occurrence, whether the duplicates come in one header or in several. One malformed
  member or more than 32 members make the whole list invalid, and it is dropped. A list longer
  than 512 characters is cut by whole members, those over 128 characters first, then from the
  end ("tracestate Limits").
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

_OWS = " \t"
_TRACEPARENT = re.compile(
    r"(?P<version>[0-9a-f]{2})-(?P<trace_id>[0-9a-f]{32})-(?P<span_id>[0-9a-f]{16})"
    r"-(?P<flags>[0-9a-f]{2})(?P<rest>.*)",
    re.DOTALL,
)
# key = ( lcalpha / DIGIT ) 0*255 ( keychar )
# keychar = lcalpha / DIGIT / "_" / "-" / "*" / "/" / "@"
_KEY = r"[0-9a-z][_0-9a-z\-*/@]{0,255}"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(rf"({_KEY})=({_VALUE})")
_LIST_SPLIT = re.compile(r"[ \t]*,[ \t]*")
MAX_MEMBERS = 32
MAX_TRACESTATE_CHARS = 512
_LONG_MEMBER = 128


def parse_traceparent(values: Sequence[str]) -> SpanContext | None:
    """The remote parent named by the traceparent header(s), or None when there is none valid."""
    if len(values) != 1:
        return None  # absent, or sent more than once
    match = _TRACEPARENT.fullmatch(values[0].strip(_OWS))
    if match is None:
        return None
    version, rest = match["version"], match["rest"]
    if version == "ff" or (version == "00" and rest) or (rest and not rest.startswith("-")):
        return None
    trace_id, span_id = int(match["trace_id"], 16), int(match["span_id"], 16)
    if trace_id == 0 or span_id == 0:
        return None
    return SpanContext(
        trace_id=trace_id,
        span_id=span_id,
        is_remote=True,
        trace_flags=TraceFlags(int(match["flags"], 16)),
    )


def parse_tracestate(values: Sequence[str]) -> list[tuple[str, str]]:
    """The members of the tracestate header(s), or an empty list when the list is invalid.
    A duplicated key keeps its first value."""
    members: dict[str, str] = {}
    count = 0
    for value in values:
        for member in _LIST_SPLIT.split(value.strip(_OWS)):
            if not member:
                continue
            match = _MEMBER.fullmatch(member)
            if match is None:
                return []
            count += 1
            members.setdefault(match[1], match[2])
    if count > MAX_MEMBERS:
        return []
    return _truncate(list(members.items()))


class W3CTraceState(TraceState):
    """OpenTelemetry's ``TraceState`` holding members that ``parse_tracestate`` already checked
    against the current key grammar. ``TraceState``'s own constructor checks the 2021 grammar
    and drops the keys it no longer knows (``foo@``, ``foo@bar@baz``, ``t@vvvvvvvvvvvvvvv``), so
    the members are set in its mapping directly; its other methods read that mapping, and the
    outbound ``tracestate`` header is written from it."""

    def __init__(self, entries: Sequence[tuple[str, str]] | None = None) -> None:
        super().__init__()
        self._dict = dict(entries or ())


def _truncate(members: list[tuple[str, str]]) -> list[tuple[str, str]]:
    def length(entries: list[tuple[str, str]]) -> int:
        return sum(len(key) + len(value) + 1 for key, value in entries) + max(len(entries) - 1, 0)

    while length(members) > MAX_TRACESTATE_CHARS:
        long_ones = [i for i, (k, v) in enumerate(members) if len(k) + len(v) + 1 > _LONG_MEMBER]
        members.pop(long_ones[-1] if long_ones else -1)
    return members


def extract(traceparents: Sequence[str], tracestates: Sequence[str]) -> Context:
    """The OpenTelemetry context to start the server span in: the caller's trace when its
    headers are valid, otherwise an empty context (a new trace, without tracestate)."""
    parent = parse_traceparent(traceparents)
    if parent is None:
        return Context()
    members = parse_tracestate(tracestates)
    if members:
        parent = SpanContext(
            trace_id=parent.trace_id,
            span_id=parent.span_id,
            is_remote=True,
            trace_flags=parent.trace_flags,
            trace_state=W3CTraceState(members),
        )
    return trace.set_span_in_context(NonRecordingSpan(parent))
