"""The platform's outbound chain end to end: the service in its container calling the stub in
another, over real sockets, through the probe route (``probe_service.py``) to the stub's
platform route. Template-owned: no route, downstream or policy of the service is involved."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import (
    SERVICE_NAME,
    STUB_PORT,
    Stack,
    eventually,
    http,
    needs_containers,
)
from .probe_service import PLATFORM_STUB_ALIAS, PROBE_ROUTE

pytestmark = pytest.mark.e2e

PLATFORM_HOST = f"{PLATFORM_STUB_ALIAS}:{STUB_PORT}"


def _outbound_attempts(stack: Stack) -> float:
    text = http("GET", f"{stack.base_url}/metrics").body.decode()
    prefix = "http_client_requests_total{" + f'host="{PLATFORM_HOST}"'
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines)


@needs_containers
def test_platform_trace_context_and_user_agent_reach_the_downstream(
    start_stack: Callable[..., Stack],
) -> None:
    stack = start_stack(probe=True)
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    response = http("GET", f"{stack.base_url}{PROBE_ROUTE}", headers={"traceparent": traceparent})
    assert response.status == 200, response.body
    seen = stack.calls()["last_headers"]
    assert seen["traceparent"].split("-")[1] == trace_id
    assert seen["traceparent"] != traceparent  # the parent is the service's own client span
    assert seen["user-agent"] == SERVICE_NAME
    stack.program(fail_next=2, status=503)
    assert stack.probe().status == 200  # two transient failures, retried
    assert stack.calls()["count"] == 1 + 3


@needs_containers
def test_platform_breaker_opens_when_the_downstream_stops_and_closes_after(
    start_stack: Callable[..., Stack],
) -> None:
    stack = start_stack(probe=True, BREAKER__OPEN_SECONDS="3")
    assert stack.probe().status == 200
    stack.stub.get_wrapped_container().stop(timeout=5)

    answers = [stack.probe() for _ in range(8)]
    statuses = [answer.status for answer in answers]
    assert 503 in statuses, statuses
    opened = answers[statuses.index(503)]
    assert opened.headers["content-type"] == "application/problem+json"
    assert 1 <= int(opened.headers["retry-after"]) <= 3

    before = _outbound_attempts(stack)
    for _ in range(10):
        assert stack.probe().status == 503
    assert _outbound_attempts(stack) == before  # while open, no call leaves the service

    stack.stub.get_wrapped_container().start()
    eventually(
        lambda: stack.probe().status == 200,
        30,
        "the breaker to let a probe through to the restarted stub",
    )

    def closed() -> bool:
        stack.probe()
        breakers = http("GET", f"{stack.base_url}/readyz").json()["breakers"]
        return bool(breakers[PLATFORM_HOST]["state"] == "closed")

    eventually(closed, 30, "the breaker to close after its probes")


@needs_containers
def test_platform_sigterm_lets_inflight_requests_finish(start_stack: Callable[..., Stack]) -> None:
    stack = start_stack(probe=True, GRACEFUL_SHUTDOWN_TIMEOUT="20")
    stack.program(delay=2.0)
    container = stack.service.get_wrapped_container()
    with ThreadPoolExecutor(max_workers=3) as pool:
        inflight = [pool.submit(stack.probe, 30.0) for _ in range(3)]
        eventually(lambda: stack.calls()["count"] >= 3, 15, "three requests in flight")
        container.stop(timeout=25)  # SIGTERM, then SIGKILL only after 25 s
        results = [future.result() for future in inflight]
    assert [result.status for result in results] == [200, 200, 200]
    container.reload()
    assert container.attrs["State"]["ExitCode"] in (0, 143)
    events = [line.get("event") for line in stack.service_logs()]
    assert "http_client.closed" in events
