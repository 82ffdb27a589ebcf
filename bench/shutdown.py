"""The rendered service's shutdown and probe guarantees, checked for real under each server.

    .venv/bin/python -m bench.shutdown [--servers uvicorn,granian] [--results bench/results]

Renders the template with the defaults (as ``make bench`` does; granian is installed into the
render's environment) and, on loopback only, starts a slow downstream of its own (every
``GET /users/{id}`` answered after a delay) and the rendered service under each server:
uvicorn through ``python -m <package>`` (the template's ``core/server.py``), granian through
its CLI as the benchmark runs it (bench/granian_apps.py). Each check starts a fresh process:

- **drain**: 100 requests in flight (the downstream delays each 2 s), then SIGTERM. How many
  finish with 200, whether a new connection is refused, how long the exit takes, and whether
  the lifespan's shutdown (``http_client.closed``) is logged after the last request's line.
- **delay**: the same with ``SHUTDOWN_DELAY=2``: whether ``/readyz`` answers 503 while
  ``/healthz`` is still served on new connections, before the listener closes; then the drain.
- **second signal**: ``SHUTDOWN_DELAY=5``, then a second SIGTERM 0.5 s after the first: whether
  the process stops at once (the template: during the delay, it does).
- **bound**: requests longer than the drain's bound (the downstream delays 4 s;
  ``GRACEFUL_SHUTDOWN_TIMEOUT=1`` under uvicorn, ``--workers-kill-timeout 1``, granian's only
  bound, under granian): whether the exit comes after the bound, and whether the lifespan's
  shutdown still runs.

Writes ``shutdown.json`` and ``shutdown.md`` to ``--results`` and prints the table. Takes about a
minute for both servers. Decision record: docs/decisions/0014-asgi-server.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import RESULTS, WORK
from bench.processes import (
    PACKAGE,
    PREFIX,
    REPO_ROOT,
    SERVERS,
    granian_command,
    install_granian,
    pin,
    prepare_environment,
    prepare_render,
    say,
    start,
    unique_port,
    versions,
)
from bench.stub import StubProtocol
from harness.support import stop_process, wait_http

IN_FLIGHT = 100


class SlowDownstream:
    """The bench stub's answers, each written ``delay`` seconds after its request arrived, on
    a loop in a thread of this process; ``calls`` counts the requests received."""

    def __init__(self) -> None:
        self.port = unique_port()
        self.delay = 0.0
        self.calls = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> SlowDownstream:
        downstream = self

        class Delayed(StubProtocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.real: Any = transport
                self.transport = self  # type: ignore[assignment]  # data_received writes here

            def write(self, data: bytes) -> None:
                downstream.calls += data.count(b"HTTP/1.1 200")
                downstream.loop.call_later(downstream.delay, self._send, data)

            def _send(self, data: bytes) -> None:
                if not self.real.is_closing():
                    self.real.write(data)

        self.thread.start()
        server = asyncio.run_coroutine_threadsafe(
            self.loop.create_server(Delayed, "127.0.0.1", self.port, backlog=1024), self.loop
        )
        self.server = server.result(timeout=10)
        return self

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def get(port: int, path: str, timeout: float = 30.0) -> int | str:
    """The status of ``GET path`` on a new connection, or the name of the error it met."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        connection.close()


def readiness(port: int) -> str:
    """What ``/readyz`` says of the shared client: open once the lifespan's startup ran."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/readyz")
        response = connection.getresponse()
        return f"{response.status}, http_client {json.loads(response.read()).get('http_client')}"
    finally:
        connection.close()


@dataclass
class Service:
    """The rendered service under one server, with a log of its own."""

    server: str
    project: Path
    downstream: SlowDownstream
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    options: tuple[str, ...] = ()
    port: int = field(default_factory=unique_port)
    process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Service:
        env = {
            f"{PREFIX}HOST": "127.0.0.1",
            f"{PREFIX}PORT": str(self.port),
            f"{PREFIX}LOG_FORMAT": "json",
            f"{PREFIX}USERS_SERVICE__BASE_URL": f"http://127.0.0.1:{self.downstream.port}",
            **{f"{PREFIX}{name}": value for name, value in self.env.items()},
        }
        if self.server == "uvicorn":
            command = [*pin(1), str(self.project / ".venv/bin/python"), "-m", PACKAGE]
        else:
            command = granian_command(self.project, self.port, "rendered", *self.options)
            env |= {"PYTHONPATH": str(REPO_ROOT), "BENCH_PACKAGE": PACKAGE}
        self.log.unlink(missing_ok=True)
        self.process = start(command, self.project, env, self.log)
        wait_http(f"http://127.0.0.1:{self.port}/readyz", timeout=60)
        return self

    def __exit__(self, *_: object) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            stop_process(self.process, timeout=10)

    def signal(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def exit_code(self, timeout: float) -> int | None:
        assert self.process is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.process.wait(timeout)
        return None

    def events(self) -> list[dict[str, Any]]:
        """The service's JSON log lines (granian's own lines are not JSON)."""
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(line))
        return lines


def in_flight(service: Service, pool: ThreadPoolExecutor) -> list[Future[int | str]]:
    """IN_FLIGHT requests that the downstream is holding, each on its own connection."""
    before = service.downstream.calls
    futures = [pool.submit(get, service.port, f"/users/{n}", 60.0) for n in range(1, IN_FLIGHT + 1)]
    deadline = time.monotonic() + 30
    while service.downstream.calls - before < IN_FLIGHT:
        if time.monotonic() > deadline:
            msg = f"only {service.downstream.calls - before} requests reached the downstream"
            raise RuntimeError(msg)
        time.sleep(0.05)
    return futures


def statuses(futures: list[Future[int | str]]) -> dict[str, int]:
    return {str(k): v for k, v in sorted(Counter(f.result() for f in futures).items(), key=str)}


def lifespan_after_drain(service: Service) -> dict[str, Any]:
    """Whether ``http_client.closed`` is logged, and after the last ``/users`` request line."""
    events = service.events()
    closed = [e["timestamp"] for e in events if e.get("event") == "http_client.closed"]
    served = [
        e["timestamp"]
        for e in events
        if e.get("event") == "request" and str(e.get("path", "")).startswith("/users/")
    ]
    return {
        "lifespan shutdown ran (http_client.closed)": bool(closed),
        "...after the last request's line": bool(closed and served and closed[-1] >= max(served)),
    }


@dataclass
class Stopped:
    """How a service stopped on SIGTERM with ``IN_FLIGHT`` slow requests in flight."""

    code: int | None
    exited_after: float
    outcomes: dict[str, int]


def stop_under_load(
    service: Service, delay: float, after_signal: Callable[[float], None] = lambda started: None
) -> Stopped:
    """Send ``IN_FLIGHT`` requests that the downstream answers after ``delay`` seconds, SIGTERM
    the service, run ``after_signal`` (given the signal's monotonic time), wait for the exit."""
    service.downstream.delay = delay
    with ThreadPoolExecutor(max_workers=IN_FLIGHT + 4) as pool:
        futures = in_flight(service, pool)
        started = time.monotonic()
        service.signal()
        after_signal(started)
        code = service.exit_code(30)
        exited_after = round(time.monotonic() - started, 2)
        return Stopped(code, exited_after, statuses(futures))


def check_drain(service: Service) -> dict[str, Any]:
    started_up = readiness(service.port)
    new_connection: list[int | str] = []

    def probe(started: float) -> None:
        time.sleep(0.3)
        new_connection.append(get(service.port, "/healthz", 2.0))

    stopped = stop_under_load(service, 2.0, probe)
    return {
        "lifespan startup (/readyz before the load)": started_up,
        "in flight: outcomes": stopped.outcomes,
        "a new connection 0.3 s after the signal": new_connection[0],
        "exit code": stopped.code,
        "exited after (s)": stopped.exited_after,
        **lifespan_after_drain(service),
    }


def check_delay(service: Service) -> dict[str, Any]:
    """SHUTDOWN_DELAY=2: /readyz and /healthz polled on new connections after the signal."""
    timeline: list[tuple[float, int | str, int | str]] = []

    def poll(started: float) -> None:
        while time.monotonic() - started < 3.0:
            ready = get(service.port, "/readyz", 1.0)
            healthy = get(service.port, "/healthz", 1.0)
            timeline.append((round(time.monotonic() - started, 2), ready, healthy))
            time.sleep(0.2)

    stopped = stop_under_load(service, 3.0, poll)
    unready_and_serving = [t for t, ready, healthy in timeline if ready == 503 and healthy == 200]
    refused = [t for t, ready, _ in timeline if isinstance(ready, str)]
    return {
        "/readyz 503 while /healthz 200": bool(unready_and_serving),
        "503 seen for (s)": (
            round(max(unready_and_serving) - min(unready_and_serving), 2)
            if unready_and_serving
            else 0
        ),
        "first refused connection at (s)": min(refused) if refused else None,
        "first poll: /readyz, /healthz": (
            f"{timeline[0][1]}, {timeline[0][2]}" if timeline else None
        ),
        "in flight: outcomes": stopped.outcomes,
        "exit code": stopped.code,
        "exited after (s)": stopped.exited_after,
        **lifespan_after_drain(service),
    }


def check_second_signal(service: Service) -> dict[str, Any]:
    def signal_again(started: float) -> None:
        time.sleep(0.5)
        service.signal()

    stopped = stop_under_load(service, 3.0, signal_again)
    return {
        "exited after (s)": stopped.exited_after,
        "stopped at once (under 1.5 s)": stopped.exited_after < 1.5,
        "exit code": stopped.code,
        "in flight: outcomes": stopped.outcomes,
    }


def check_bound(service: Service) -> dict[str, Any]:
    stopped = stop_under_load(service, 4.0)
    return {
        "exited after (s)": stopped.exited_after,
        "stopped before the requests ended (under 3 s)": stopped.exited_after < 3.0,
        "exit code": stopped.code,
        "in flight: outcomes": stopped.outcomes,
        **lifespan_after_drain(service),
    }


CHECKS: list[tuple[str, dict[str, str], dict[str, tuple[str, ...]], Callable[..., Any]]] = [
    # (name, settings, granian's own options, check)
    ("drain", {}, {}, check_drain),
    ("delay", {"SHUTDOWN_DELAY": "2"}, {}, check_delay),
    ("second signal", {"SHUTDOWN_DELAY": "5"}, {}, check_second_signal),
    (
        "bound",
        {"GRACEFUL_SHUTDOWN_TIMEOUT": "1"},
        {"granian": ("--workers-kill-timeout", "1")},
        check_bound,
    ),
]


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return "" if value is None else str(value)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Shutdown and probe guarantees under each server",
        "",
        f"{result['started']}; bench/shutdown.py; {IN_FLIGHT} requests in flight on their own "
        "connections, loopback. Versions: "
        + ", ".join(f"{k} {v}" for k, v in result["versions"].items())
        + ". An exit code of -15 is SIGTERM raised again once the shutdown is done (143 in a "
        "container); a test of the template accepts 0 and 143.",
    ]
    for name, *_ in CHECKS:
        keys: list[str] = []
        for server in result["servers"]:
            for key in result["checks"][server][name]:
                if key not in keys:
                    keys.append(key)
        lines += ["", f"## {name}", "", "| | " + " | ".join(result["servers"]) + " |"]
        lines.append("|---|" + "---|" * len(result["servers"]))
        for key in keys:
            row = [_cell(result["checks"][s][name].get(key)) for s in result["servers"]]
            lines.append(f"| {key} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--servers", default=",".join(SERVERS))
    args = parser.parse_args()
    servers = [s for s in SERVERS if s in args.servers.split(",")]
    prepare_environment()
    logs = WORK / "shutdown-logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    args.results.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    project = prepare_render("default", {})
    if "granian" in servers:
        install_granian(project)
    checks: dict[str, dict[str, Any]] = {}
    with SlowDownstream() as downstream:
        for server in servers:
            for name, settings, options, check in CHECKS:
                say(f"{server}: {name}")
                log = logs / f"{server}-{name.replace(' ', '-')}.log"
                with Service(
                    server, project, downstream, log, settings, options.get(server, ())
                ) as s:
                    outcome = check(s)
                checks.setdefault(server, {})[name] = outcome
                say(f"  {outcome}")
    found = versions(project)
    result = {
        "started": started,
        "servers": servers,
        "versions": {k: found[k] for k in ("python", "uvicorn", "granian") if k in found},
        "checks": checks,
    }
    (args.results / "shutdown.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "shutdown.md").write_text(markdown(result))
    say(f"wrote {args.results}/shutdown.json and shutdown.md")
    print()
    print(markdown(result))
    if os.environ.get("BENCH_KEEP_LOGS") != "1":
        shutil.rmtree(logs, ignore_errors=True)


if __name__ == "__main__":
    main()
