"""The fault and abuse suite: a rendered service runs as a real process (uvicorn) in front of a
misbehaving downstream on loopback, and is attacked through real sockets.

Each case asserts what the caller gets, what the service logged, and that the service is still
healthy afterwards. The figures (cases, requests lost, file descriptors, retry amplification)
are written to .cache/reliability.json and summarised in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.support import REPO_ROOT, RunningService, render, run, serve
from tests.fault_downstream import (
    BOMB_ENCODINGS,
    BOMB_SIZE,
    FaultDownstream,
    bomb,
    fault_downstream,
)

pytestmark = [pytest.mark.render, pytest.mark.xdist_group("faults")]

PACKAGE = "my_service"
# Short timeouts keep each case to seconds; the breaker stays out of the way except where a
# case is about it.
FAST = {
    "MY_SERVICE_HTTP__TIMEOUT": "1",
    "MY_SERVICE_HTTP__CONNECT_TIMEOUT": "0.5",
    "MY_SERVICE_RETRY__DEADLINE": "3",
    "MY_SERVICE_HTTP__MAX_RESPONSE_BYTES": str(1024 * 1024),
    "MY_SERVICE_HTTP__KEEPALIVE_EXPIRY": "0.5",
    "MY_SERVICE_BREAKER__MINIMUM_CALLS": "100000",
}
PROBLEM = "application/problem+json"
REPORT: dict[str, Any] = {"cases": {}}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    project = render(tmp_path_factory.mktemp("faults") / "service")
    run(["make", "install"], cwd=project)
    # br and zstd too, so that the service accepts every encoding the bombs use and must bound
    # each (without them it accepts gzip and deflate only).
    run(
        [
            str(REPO_ROOT / ".venv/bin/uv"),
            "pip",
            "install",
            "--python",
            str(project / ".venv/bin/python"),
            "brotli>=1.2",
            "backports.zstd>=1.0; python_version < '3.14'",
        ],
        cwd=project,
    )
    yield project
    out = REPO_ROOT / ".cache/reliability.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(REPORT, indent=2))


@pytest.fixture(scope="module")
def downstream() -> Iterator[FaultDownstream]:
    with fault_downstream() as fault:
        yield fault


def _events(service: RunningService, event: str) -> list[dict[str, Any]]:
    return [line for line in service.log_lines() if line.get("event") == event]


def _request_line(service: RunningService, path: str) -> dict[str, Any]:
    """The request log line for ``path``; it is written just after the answer is sent."""
    deadline = time.monotonic() + 5
    while True:
        found = [line for line in _events(service, "request") if line.get("path") == path]
        if found:
            return found[-1]
        assert time.monotonic() < deadline, f"no request line for {path}"
        time.sleep(0.05)


def _assert_healthy(service: RunningService) -> None:
    assert httpx.get(f"{service.base_url}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{service.base_url}/readyz", timeout=5).status_code == 200
    assert service.process.poll() is None


CASES = [
    # name, downstream mode, extra, expected status, expected downstream calls, logged error
    ("refused", "refused", {}, 502, 0, "ConnectError"),
    ("never-answers", "hang", {}, 504, 3, "ReadTimeout"),
    ("reset-mid-body", "reset_mid_body", {}, 502, 1, None),
    ("malformed-http", "malformed", {}, 502, 3, "RemoteProtocolError"),
    ("slow-drip", "drip", {}, 504, 1, None),
    ("huge-declared", "huge_declared", {}, 502, 1, "ResponseTooLarge"),
    ("huge-streamed", "huge_chunked", {}, 502, 1, None),
    ("retry-after-huge", "retry_after", {"retry_after": "99999999"}, 502, 1, None),
    ("retry-after-negative", "retry_after", {"retry_after": "-5"}, 502, 3, None),
    ("retry-after-garbage", "retry_after", {"retry_after": "soon\x01"}, 502, 3, None),
]


@pytest.mark.parametrize(
    ("name", "mode", "extra", "status", "calls", "logged"), CASES, ids=[c[0] for c in CASES]
)
def test_downstream_fault(
    project: Path,
    downstream: FaultDownstream,
    name: str,
    mode: str,
    extra: dict[str, Any],
    status: int,
    calls: int,
    logged: str | None,
) -> None:
    url = "http://127.0.0.1:9" if mode == "refused" else downstream.url  # port 9: nothing listens
    downstream.set(mode, **extra)
    with serve(project, PACKAGE, FAST, downstream_url=url) as service:
        started = time.monotonic()
        response = httpx.get(f"{service.base_url}/users/1", timeout=30)
        took = time.monotonic() - started
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == PROBLEM
        assert response.json()["status"] == status
        if mode != "refused":
            assert downstream.calls == calls
        assert _request_line(service, "/users/1")["status"] == status
        if logged is not None:
            assert logged in {line.get("error") for line in _events(service, "outbound.error")}
        _assert_healthy(service)
        assert not _events(service, "request.failed")  # no 500 from our own code
    REPORT["cases"][name] = {
        "status": status,
        "downstream_calls": downstream.calls,
        "seconds": round(took, 2),
    }


MIB = 1024 * 1024
BOMB_LIMIT = 4 * MIB  # http.max_response_bytes in the bomb cases: each bomb is smaller on the wire
RSS_MARGIN = 64 * MIB  # the interpreter's own churn: far below the 1 GiB a bomb decodes to


@pytest.mark.parametrize("encoding", BOMB_ENCODINGS)
def test_decompression_bomb_fails_fast_within_the_memory_limit(
    project: Path, downstream: FaultDownstream, encoding: str
) -> None:
    """A 200 whose body is about 1 MiB on the wire and 1 GiB decoded: 502 at once, the
    service's peak resident memory stays near the limit, the connection is dropped, and the
    breaker, the log line and the metrics name the bomb."""
    body = bomb(encoding, BOMB_SIZE)  # built before the clock starts
    assert len(body) < BOMB_LIMIT < BOMB_SIZE
    env = {**FAST, "MY_SERVICE_HTTP__MAX_RESPONSE_BYTES": str(BOMB_LIMIT)}
    downstream.set("ok")  # whatever the test before left it answering
    with serve(project, PACKAGE, env, downstream_url=downstream.url) as service:
        accepted = httpx.get(f"{service.base_url}/users/1", timeout=10)  # warm: the pool, imports
        assert accepted.status_code == 200
        downstream.set("bomb", encoding=encoding)
        before = service.memory("VmRSS")
        started = time.monotonic()
        response = httpx.get(f"{service.base_url}/users/1", timeout=30)
        took = time.monotonic() - started
        peak = service.memory("VmHWM")
        assert response.status_code == 502, response.text
        assert response.headers["content-type"] == PROBLEM
        assert took < 3, took
        assert peak - before < BOMB_LIMIT + RSS_MARGIN, (before, peak)
        errors = _events(service, "outbound.error")
        assert [(line["error"], line["phase"]) for line in errors] == [
            ("DecodedResponseTooLarge", "body")
        ]
        assert downstream.calls == 1  # not retried
        host = downstream.url.removeprefix("http://")
        breaker = httpx.get(f"{service.base_url}/readyz", timeout=5).json()["breakers"][host]
        assert breaker["window_failures"] == 1  # the downstream's failure, under its 200
        metrics = httpx.get(f"{service.base_url}/metrics", timeout=5).text
        outcome = f'host="{host}",method="GET",outcome="DecodedResponseTooLarge"}} 1.0'
        assert outcome in metrics
        # The bomb's connection was dropped, not kept for the next call, when bytes of it were
        # still unread (gzip and deflate: about 1 MiB on the wire, the limit is reached after a
        # few KiB). A small bomb (br, zstd) may have arrived whole before it failed: its
        # connection is then clean, and the pool may keep it.
        downstream.set("ok")
        assert httpx.get(f"{service.base_url}/users/1", timeout=10).status_code == 200
        if len(body) > MIB:
            assert downstream.connections == 1
        else:
            assert downstream.connections <= 1
        _assert_healthy(service)
        assert not _events(service, "request.failed")
    REPORT["cases"][f"bomb-{encoding}"] = {
        "status": response.status_code,
        "wire_bytes": len(body),
        "decoded_bytes": BOMB_SIZE,
        "limit_bytes": BOMB_LIMIT,
        "seconds": round(took, 2),
        "rss_before_mib": round(before / MIB, 1),
        "rss_peak_mib": round(peak / MIB, 1),
    }


async def _burst(
    base_url: str, total: int, concurrency: int, keepalive: bool = True
) -> list[tuple[str, int | str]]:
    """Send ``total`` GETs with ``concurrency`` in flight; each result is (request id, status or
    the error's name)."""
    limits = httpx.Limits(
        max_connections=concurrency, max_keepalive_connections=concurrency if keepalive else 0
    )
    results: list[tuple[str, int | str]] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(total):
        queue.put_nowait(n)

    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            while not queue.empty():
                n = queue.get_nowait()
                request_id = f"burst-{n}-{uuid.uuid4().hex[:8]}"
                try:
                    response = await client.get(
                        f"{base_url}/users/{n % 50 + 1}", headers={"X-Request-ID": request_id}
                    )
                    if response.status_code >= 500:
                        assert response.headers["content-type"] == PROBLEM
                    results.append((request_id, response.status_code))
                except httpx.HTTPError as exc:
                    results.append((request_id, type(exc).__name__))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def test_flapping_downstream_under_concurrent_load(
    project: Path, downstream: FaultDownstream
) -> None:
    downstream.set("flap")
    env = {**FAST, "MY_SERVICE_BREAKER__MINIMUM_CALLS": "10"}
    with serve(project, PACKAGE, env, downstream_url=downstream.url) as service:
        results = asyncio.run(_burst(service.base_url, total=600, concurrency=32))
        statuses = {status for _, status in results}
        assert statuses <= {200, 502, 503, 504}, statuses
        assert 200 in statuses
        _assert_healthy(service)
        assert not _events(service, "request.failed")
    REPORT["cases"]["flapping"] = {"requests": len(results), "statuses": sorted(map(str, statuses))}


def test_load_while_half_the_calls_fail(project: Path, downstream: FaultDownstream) -> None:
    downstream.set("half")
    total = 5000
    with serve(project, PACKAGE, FAST, downstream_url=downstream.url) as service:
        httpx.get(f"{service.base_url}/users/1", timeout=10)  # the pool's first connection
        before = service.open_fds()
        downstream.set("half")
        results = asyncio.run(_burst(service.base_url, total=total, concurrency=64))
        statuses = [status for _, status in results]
        assert len(results) == total  # every request answered
        assert set(statuses) <= {200, 502, 503, 504}, set(statuses)
        assert not _events(service, "request.failed")
        amplification = downstream.calls / total
        # Each request may retry only through the budget: 0.2 per request plus a burst of 10.
        assert downstream.calls <= total * 1.2 + 10, amplification

        def settled() -> bool:
            # An outbound call makes the pool scan and close its expired idle connections.
            httpx.get(f"{service.base_url}/users/1", timeout=5)
            return service.open_fds() <= before

        deadline = time.monotonic() + 15
        while not settled():
            assert time.monotonic() < deadline, (before, service.open_fds())
            time.sleep(0.5)
        after = service.open_fds()
        _assert_healthy(service)
    REPORT["load"] = {
        "requests": total,
        "answered": len(results),
        "lost": total - len(results),
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses), key=str)},
        "downstream_calls": downstream.calls,
        "retry_amplification": round(amplification, 3),
        "fd_before": before,
        "fd_after": after,
        "fd_delta": after - before,
    }


def test_sigterm_during_a_burst_loses_nothing(project: Path, downstream: FaultDownstream) -> None:
    downstream.set("ok", delay=0.3)
    env = {**FAST, "MY_SERVICE_GRACEFUL_SHUTDOWN_TIMEOUT": "10"}
    with serve(project, PACKAGE, env, downstream_url=downstream.url) as service:

        async def burst_then_sigterm() -> list[tuple[str, int | str]]:
            burst = asyncio.create_task(
                _burst(service.base_url, total=400, concurrency=32, keepalive=False)
            )
            await asyncio.sleep(1.5)
            service.process.send_signal(signal.SIGTERM)
            return await burst

        sent_at = time.monotonic()
        results = asyncio.run(burst_then_sigterm())
        exit_code = service.process.wait(timeout=10 + 5)
        stopped_in = time.monotonic() - sent_at
        logged = {line["request_id"]: line["status"] for line in _events(service, "request")}
        closed = _events(service, "http_client.closed")

    answered = [(rid, status) for rid, status in results if isinstance(status, int)]
    refused = [(rid, status) for rid, status in results if not isinstance(status, int)]
    # uvicorn drains, runs the lifespan's shutdown, then re-raises SIGTERM: a shell sees 143.
    assert exit_code in (0, -signal.SIGTERM)
    assert closed, "the lifespan did not close the shared client"
    assert answered and refused  # some finished before the signal, later ones were refused
    assert {status for _, status in answered} == {200}
    # Nothing lost: every request the service took in was answered to its caller.
    lost = [rid for rid, _ in refused if rid in logged]
    assert lost == []
    assert {error for _, error in refused} <= {"ConnectError", "RemoteProtocolError", "ReadError"}
    REPORT["shutdown"] = {
        "requests": len(results),
        "answered": len(answered),
        "refused_before_accept": len(refused),
        "lost": len(lost),
        "exit_code": 128 + signal.SIGTERM if exit_code == -signal.SIGTERM else exit_code,
        "seconds_to_exit": round(stopped_in, 1),
    }


def test_shutdown_delay_turns_readyz_unready_and_keeps_serving_then_drains(
    project: Path, downstream: FaultDownstream
) -> None:
    """SHUTDOWN_DELAY: after SIGTERM /readyz is 503 while /users/1 is served on new connections;
    then the drain lets a request in flight finish and the process exits cleanly."""
    downstream.set("ok")
    env = {
        **FAST,
        "MY_SERVICE_HTTP__TIMEOUT": "10",
        "MY_SERVICE_RETRY__DEADLINE": "20",
        "MY_SERVICE_SHUTDOWN_DELAY": "5",
        "MY_SERVICE_GRACEFUL_SHUTDOWN_TIMEOUT": "20",
    }
    with serve(project, PACKAGE, env, downstream_url=downstream.url) as service:
        service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while httpx.get(f"{service.base_url}/readyz", timeout=5).status_code != 503:
            assert time.monotonic() < deadline, "/readyz did not turn 503 after SIGTERM"
            time.sleep(0.05)
        assert httpx.get(f"{service.base_url}/readyz", timeout=5).json() == {"status": "draining"}
        # Every other request is served, each on a new connection.
        assert httpx.get(f"{service.base_url}/users/1", timeout=10).status_code == 200
        assert httpx.get(f"{service.base_url}/healthz", timeout=5).status_code == 200
        assert service.process.poll() is None
        # A request taken in during the delay and still running when the drain starts finishes.
        downstream.set("ok", delay=8)
        in_flight = httpx.get(f"{service.base_url}/users/2", timeout=30)
        exit_code = service.process.wait(timeout=30)
        events = [(line.get("event"), line.get("path")) for line in service.log_lines()]
        assert ("shutdown.draining", None) in events, "the drain did not start after the delay"
        # The drain started while /users/2 was still in flight, and it was answered after.
        assert events.index(("shutdown.draining", None)) < events.index(("request", "/users/2"))
        assert ("http_client.closed", None) in events
    assert in_flight.status_code == 200, in_flight.text
    assert exit_code in (0, -signal.SIGTERM)


# Schemathesis, every check, against the running service in front of a downstream that is up,
# down (refused; the breaker opens) and slow (past the timeout). Its not_a_server_error check
# allows only the gateway statuses that each scenario must answer (documented, as problem+json,
# which the other checks verify); anything else it finds fails the test.
SCHEMATHESIS_SCENARIOS: dict[str, tuple[str | None, dict[str, str], tuple[str, ...]]] = {
    "downstream-up": (None, {}, ()),
    "downstream-down": ("refused", {"MY_SERVICE_BREAKER__MINIMUM_CALLS": "5"}, ("502", "503")),
    "downstream-slow": (
        "slow",
        {"MY_SERVICE_HTTP__TIMEOUT": "0.2", "MY_SERVICE_RETRY__DEADLINE": "0.5"},
        ("504",),
    ),
}


@pytest.mark.parametrize("scenario", SCHEMATHESIS_SCENARIOS)
def test_schemathesis_all_checks_find_nothing(
    project: Path, downstream: FaultDownstream, scenario: str, tmp_path: Path
) -> None:
    mode, env, gateway_statuses = SCHEMATHESIS_SCENARIOS[scenario]
    downstream_url = None  # the stub downstream the render ships
    if mode == "refused":
        downstream_url = "http://127.0.0.1:9"  # port 9: nothing listens
    elif mode == "slow":
        downstream.set("ok", delay=2)
        downstream_url = downstream.url
    config = tmp_path / "schemathesis.toml"
    allowed = ", ".join(f'"{status}"' for status in ("2xx", "3xx", "4xx", *gateway_statuses))
    config.write_text(
        f"[checks.not_a_server_error]\nexpected-statuses = [{allowed}]\n"
        "[warnings]\nfail-on = true\n"
    )
    with serve(project, PACKAGE, {**FAST, **env}, downstream_url=downstream_url) as service:
        result = subprocess.run(
            [
                str(REPO_ROOT / ".venv/bin/schemathesis"),
                "--config-file",
                str(config),
                "run",
                f"{service.base_url}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                "30",
                "--seed",
                "1",
                "--workers",
                "1",
                "--phases",
                "examples,coverage,fuzzing",
                "--no-color",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
        assert not _events(service, "request.failed")
        _assert_healthy(service)
    lines = result.stdout.strip().splitlines()
    # "N generated, ..." and the closing "No issues found in ...".
    REPORT.setdefault("schemathesis", {})[scenario] = [
        line.strip() for line in lines if "generated" in line or "No issues found" in line
    ]
