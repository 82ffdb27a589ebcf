"""`make demo`: render a service with the default answers, start it in front of the stub
downstream it ships, and show, phase by phase, what the outbound path does:

1. the happy call: GET /users/1 with a traceparent, and the correlated JSON log lines (the
   inbound request and the outbound call share request_id and trace_id);
2. a downstream that fails twice and recovers: the retry lines with their waits, and the caller
   still gets 200;
3. a downstream that is down: the breaker opens, the caller gets 503 problem+json with
   Retry-After, and no downstream call is made;
4. recovery: after the open time the half-open probe goes through and the breaker closes.

Each phase's outcome is checked, not only printed: the demo exits 1 when one is not what the
template promises. The breaker's policy is shortened through the downstream's settings (the same
environment variable a team would set), so the whole demo takes seconds, not the default 15 s of
open time.
"""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.interpreters import DEFAULT_PYTHON_VERSION, PYTHON_VERSIONS, put_found_on_path
from harness.support import RunningService, render, run, serve

PACKAGE = "my_service"
# A window of the last four calls that opens at three failures (so the two failures of phase 2
# beside two successes leave it closed), a short pause, one probe to close.
OPEN_SECONDS = 2
DEMO_BREAKER = {
    "window_size": 4,
    "minimum_calls": 4,
    "failure_rate_threshold": 0.75,
    "open_seconds": OPEN_SECONDS,
    "half_open_probes": 1,
}
# Calls the down phase may need before the breaker has seen enough failures to open.
MAX_CALLS_TO_OPEN = 10


class PhaseFailed(AssertionError):
    """A phase did not end as the template promises; the message says what was seen."""


@dataclass
class Answer:
    """One inbound call's outcome as the caller sees it."""

    status: int
    headers: dict[str, str]
    body: str

    @property
    def request_id(self) -> str:
        return self.headers.get("x-request-id", "")


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _check(condition: bool, failure: str) -> None:
    """Stop the demo with ``failure`` unless ``condition`` holds."""
    if not condition:
        raise PhaseFailed(failure)
    print(f"   ok: {failure.split(':')[0]}")


def _get(url: str, headers: dict[str, str] | None = None) -> Answer:
    """GET ``url``; an error status is an answer too (urllib raises it as HTTPError)."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return Answer(
                response.status,
                {k.lower(): v for k, v in response.headers.items()},
                response.read().decode(),
            )
    except urllib.error.HTTPError as error:
        return Answer(
            error.code, {k.lower(): v for k, v in error.headers.items()}, error.read().decode()
        )


def _post(url: str, body: dict[str, Any]) -> None:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5):
        pass


def _stub_calls(service: RunningService) -> dict[str, Any]:
    with urllib.request.urlopen(f"{service.stub_url}/_stub/calls", timeout=5) as response:
        calls: dict[str, Any] = json.load(response)
    return calls


def _lines_of(service: RunningService, answer: Answer, *events: str) -> list[dict[str, Any]]:
    """The service's log lines of ``events`` written while it handled ``answer``'s request.

    Waits (up to 5 s) for the request's inbound ``request`` line, its last: the service writes
    it once the response is sent, so the caller can hold the answer before the line is there."""
    deadline = time.monotonic() + 5
    while True:
        mine = [line for line in service.log_lines() if line.get("request_id") == answer.request_id]
        if any(line.get("event") == "request" for line in mine) or time.monotonic() > deadline:
            return [line for line in mine if line.get("event") in events]
        time.sleep(0.02)


def _show(lines: list[dict[str, Any]]) -> None:
    for line in lines:
        print("   " + json.dumps(line))


def happy_call(service: RunningService) -> None:
    """Phase 1: one call, its trace continued from the caller to the downstream."""
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    _say(f"1. happy call: GET /users/1 with traceparent {traceparent}")
    answer = _get(f"{service.base_url}/users/1", {"traceparent": traceparent})
    print(f"   HTTP {answer.status} x-request-id={answer.request_id}\n   {answer.body}")
    seen = _stub_calls(service)["last_headers"]
    print(f"   the downstream saw traceparent={seen.get('traceparent')}")
    lines = _lines_of(service, answer, "request", "outbound.response")
    _show(lines)
    _check(answer.status == 200, f"the caller got 200: got {answer.status}")
    by_event = {line["event"]: line for line in lines}
    _check(
        by_event.keys() == {"request", "outbound.response"}
        and all(line["trace_id"] == trace_id for line in lines),
        f"the inbound and the outbound line share trace_id {trace_id}: got {lines}",
    )
    _check(
        trace_id in seen.get("traceparent", ""),
        f"the downstream received the same trace: got {seen.get('traceparent')}",
    )


def fails_twice_then_recovers(service: RunningService) -> None:
    """Phase 2: two 503s, two retries with backoff, then the answer the caller gets."""
    _say("2. the downstream fails twice, then recovers")
    _post(f"{service.stub_url}/_stub/program", {"fail_next": 2, "status": 503})
    before = _stub_calls(service)["count"]
    answer = _get(f"{service.base_url}/users/1")
    print(f"   HTTP {answer.status}")
    lines = _lines_of(service, answer, "outbound.response", "outbound.retry")
    _show(lines)
    retries = [line for line in lines if line["event"] == "outbound.retry"]
    calls = _stub_calls(service)["count"] - before
    _check(answer.status == 200, f"the caller still got 200: got {answer.status}")
    _check(
        len(retries) == 2 and all("wait_s" in line for line in retries),
        f"two retry lines, each with its wait: got {retries}",
    )
    _check(calls == 3, f"three calls reached the downstream: got {calls}")


def downstream_down(service: RunningService) -> float:
    """Phase 3: every call fails until the breaker opens; then calls fail fast, unsent.
    Returns the Retry-After the caller was given."""
    _say("3. the downstream is down")
    _post(f"{service.stub_url}/_stub/program", {"fail_next": 1000, "status": 503})
    request_ids = []
    for attempt in range(1, MAX_CALLS_TO_OPEN + 1):
        before = _stub_calls(service)["count"]
        answer = _get(f"{service.base_url}/users/1")
        sent = _stub_calls(service)["count"] - before
        request_ids.append(answer.request_id)
        transitions = _lines_of(service, answer, "breaker.transition")
        print(
            f"   call {attempt}: HTTP {answer.status}, {sent} call(s) reached the downstream"
            + "".join(f"; breaker {line['old']} -> {line['new']}" for line in transitions)
        )
        if "retry-after" in answer.headers:
            break
    else:
        raise PhaseFailed(f"the breaker did not open within {MAX_CALLS_TO_OPEN} calls")
    print(
        f"   content-type: {answer.headers.get('content-type')}, "
        f"retry-after: {answer.headers['retry-after']}\n   {answer.body}"
    )
    opened = [
        line
        for line in service.log_lines()
        if line.get("event") == "breaker.transition" and line.get("new") == "open"
    ]
    _check(
        len(opened) == 1 and opened[0]["request_id"] in request_ids[:-1],
        f"the breaker opened once, on a failed call of this phase: got {opened}",
    )
    _check(answer.status == 503, f"the caller got 503: got {answer.status}")
    _check(
        answer.headers.get("content-type") == "application/problem+json",
        f"as problem+json: got {answer.headers.get('content-type')}",
    )
    _check(sent == 0, f"no downstream call was made: {sent} were")
    retry_after = float(answer.headers["retry-after"])
    _check(
        0 < retry_after <= OPEN_SECONDS,
        f"Retry-After is the time left open: got {retry_after}",
    )
    return retry_after


def recovery(service: RunningService, retry_after: float) -> None:
    """Phase 4: the downstream is back; after Retry-After one probe goes through and closes."""
    _say(f"4. recovery: the downstream is back; waiting Retry-After ({retry_after:g} s)")
    _post(f"{service.stub_url}/_stub/program", {"fail_next": 0})
    time.sleep(retry_after)
    before = _stub_calls(service)["count"]
    answer = _get(f"{service.base_url}/users/1")
    sent = _stub_calls(service)["count"] - before
    transitions = [
        (line["old"], line["new"]) for line in _lines_of(service, answer, "breaker.transition")
    ]
    print(f"   HTTP {answer.status}, {sent} call (the probe)")
    _show(_lines_of(service, answer, "breaker.transition", "outbound.response"))
    _check(answer.status == 200, f"the caller got 200 again: got {answer.status}")
    _check(
        transitions == [("open", "half_open"), ("half_open", "closed")],
        f"the breaker went half-open, probed, and closed: got {transitions}",
    )
    _check(sent == 1, f"one probe call reached the downstream: got {sent}")


def demo_python_version() -> str:
    """The default python_version when this machine has it; else the one running the demo, so
    the README's `make demo` needs nothing but the python3 it was started with (uv would
    otherwise download the default, which needs the internet)."""
    found = put_found_on_path()
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if DEFAULT_PYTHON_VERSION in found or running not in PYTHON_VERSIONS:
        return DEFAULT_PYTHON_VERSION
    return running


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="demo-") as tmp:
        project = Path(tmp) / "my-service"
        python_version = demo_python_version()
        _say(f"copier copy (default answers, python_version={python_version}) -> {project}")
        render(project, {"python_version": python_version})
        _say("make install (uv sync)")
        run(["make", "install"], cwd=project)
        breaker = json.dumps(DEMO_BREAKER)
        _say(f"start the service with MY_SERVICE_USERS_SERVICE__BREAKER={breaker}")
        env = {"MY_SERVICE_USERS_SERVICE__BREAKER": breaker, "PYTHONUNBUFFERED": "1"}
        try:
            with serve(project, PACKAGE, env) as service:
                happy_call(service)
                fails_twice_then_recovers(service)
                recovery(service, downstream_down(service))
        except PhaseFailed as failure:
            print(f"\nDEMO FAILED: {failure}", file=sys.stderr)
            return 1
        closed = [line for line in service.log_lines() if line.get("event") == "http_client.closed"]
        _say("shutdown")
        print("   " + (json.dumps(closed[-1]) if closed else "no http_client.closed line!"))
        if not closed:
            print("\nDEMO FAILED: the shared client was not closed on shutdown", file=sys.stderr)
            return 1
    _say(f"every phase behaved as promised ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
