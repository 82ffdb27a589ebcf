"""Measuring: wrk load runs, CPU time per request from /proc, descriptors, connections and
memory of a service under load, its profile (py-spy), and the in-process cost by layer
(bench/micro.py)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import BENCH
from bench.processes import PACKAGE, Scenario, pin, say
from harness.support import run

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def service_cpu_seconds(scenario: Scenario) -> float:
    """The CPU time of a scenario's processes: the one started and, under granian, its worker
    process, where the requests are served."""
    return sum(cpu_seconds(pid) for pid in scenario.pids or [scenario.pid])


def settle(plan: list[Scenario], timeout: float = 30.0) -> float:
    """Wait until every service is idle, so that the next cell has its core to itself.

    A server keeps working on requests whose client has gone: after a run of the anti-pattern
    (E) at c=128, its backlog burns the core for seconds, and would slow whichever scenario ran
    next. Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = sum(service_cpu_seconds(s) for s in plan)
        time.sleep(0.25)
        if sum(service_cpu_seconds(s) for s in plan) - before < 0.02:  # under 8% of a core
            break
    return round(time.monotonic() - started, 2)


# --- load ----------------------------------------------------------------------------------


def wrk(binary: str, url: str, connections: int, seconds: int) -> dict[str, Any]:
    command = [
        *pin(0),
        binary,
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(BENCH / "report.lua"),
        f"{url}/users/42",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def measure_cell(
    binary: str, scenario: Scenario, connections: int, seconds: int, warmup: int
) -> dict[str, Any]:
    if warmup:
        wrk(binary, scenario.url, connections, warmup)
    load = os.getloadavg()[0]
    cpu_before = service_cpu_seconds(scenario)
    result = wrk(binary, scenario.url, connections, seconds)
    cpu_used = service_cpu_seconds(scenario) - cpu_before
    requests = result["requests"]
    latency = result["latency_us"]
    errors = result["errors"]
    return {
        "rps": round(requests / (result["duration_us"] / 1e6), 1),
        "requests": requests,
        "p50_ms": round(latency["p50"] / 1000, 2),
        "p90_ms": round(latency["p90"] / 1000, 2),
        "p99_ms": round(latency["p99"] / 1000, 2),
        "max_ms": round(latency["max"] / 1000, 2),
        "errors": sum(errors.values()),
        "non_2xx": errors["status"],
        "timeouts": errors["timeout"],
        "cpu_us_per_request": round(cpu_used * 1e6 / requests, 1) if requests else None,
        "loadavg_1m": round(load, 2),
    }


# --- connections, file descriptors, memory -------------------------------------------------

_TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT"}


def _tcp_table() -> list[tuple[int, int, str, int]]:
    """(local port, remote port, state, inode) for every TCP socket in this network namespace."""
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                local, remote, state, inode = parts[1], parts[2], parts[3], int(parts[9])
                rows.append(
                    (
                        int(local.rsplit(":", 1)[1], 16),
                        int(remote.rsplit(":", 1)[1], 16),
                        state,
                        inode,
                    )
                )
    return rows


def snapshot(pid: int, service_port: int, stub_port: int) -> dict[str, int]:
    """The process's open file descriptors, its ESTABLISHED connections (to the downstream and
    from clients), its RSS, and the machine's TIME_WAIT sockets towards the downstream."""
    fd_dir = Path(f"/proc/{pid}/fd")
    inodes = set()
    fds = 0
    for entry in fd_dir.iterdir():
        fds += 1
        with contextlib.suppress(OSError):
            target = os.readlink(entry)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    outbound = inbound = time_wait = 0
    for local, remote, state, inode in _tcp_table():
        if state == "01" and inode in inodes:
            outbound += remote == stub_port
            inbound += local == service_port
        elif state == "06" and stub_port in (local, remote):
            time_wait += 1
    status = Path(f"/proc/{pid}/status").read_text()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return {
        "fds": fds,
        "established_outbound": outbound,
        "established_inbound": inbound,
        "time_wait_to_downstream": time_wait,
        "rss_kib": rss,
        "threads": threads,
    }


@contextlib.contextmanager
def peak_sampler(pid: int, service_port: int, stub_port: int) -> Iterator[dict[str, int]]:
    """The highest fds and outbound ESTABLISHED counts seen while the block runs."""
    peak = {"fds": 0, "established_outbound": 0}
    stopping = threading.Event()

    def sample() -> None:
        while not stopping.wait(0.25):
            with contextlib.suppress(OSError):
                now = snapshot(pid, service_port, stub_port)
                for key in peak:
                    peak[key] = max(peak[key], now[key])

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stopping.set()
        thread.join()


FD_CHECK_CONNECTIONS = 128


def _send(binary: str, service: Scenario, count: int, rate: float) -> tuple[int, float]:
    """At least ``count`` requests at c=128 (wrk runs for a time, not a count: run for the time
    the rate predicts, then top up). Returns the requests sent and the rate seen."""
    sent = 0
    while sent < count:
        seconds = max(1, min(240, round((count - sent) / rate * 1.03 + 0.5)))
        result = wrk(binary, service.url, FD_CHECK_CONNECTIONS, seconds)
        sent += result["requests"]
        rate = max(1.0, result["requests"] / (result["duration_us"] / 1e6))
    return sent, rate


def fd_check(
    binary: str,
    service: Scenario,
    stub_port: int,
    max_connections: int,
    counts: tuple[int, int],
    rate: float,
) -> dict[str, Any]:
    first, second = counts
    say(f"fd check: {service.key}, before, after {first} and after {second} requests (c=128)")
    snapshots = {"before": snapshot(service.pid, service.port, stub_port)}
    peaks = []
    sent = 0
    for label, target in ((f"after {first}", first), (f"after {second}", second)):
        with peak_sampler(service.pid, service.port, stub_port) as peak:
            more, rate = _send(binary, service, target - sent, rate)
        sent += more
        time.sleep(1)  # let the server finish closing the load generator's connections
        snapshots[label] = {**snapshot(service.pid, service.port, stub_port), "requests": sent}
        peaks.append(dict(peak))
        say(f"  {label}: {snapshots[label]}, peak under load {peak}")
    middle, last = snapshots[f"after {first}"], snapshots[f"after {second}"]
    peak_outbound = max(p["established_outbound"] for p in peaks)

    # Flat: after 10x more requests, no more descriptors beside the pool's connections than
    # after the first batch (give or take a few), the pool no larger than the requests that
    # can be in flight at once (it may still be growing towards that after the first batch,
    # which is not a leak), and RSS within 10%.
    def beside_pool(snap: dict[str, int]) -> int:
        return snap["fds"] - snap["established_outbound"]

    flat = (
        beside_pool(last) <= beside_pool(middle) + 10
        and last["established_outbound"] <= FD_CHECK_CONNECTIONS
        and last["rss_kib"] <= middle["rss_kib"] * 1.10
        and peak_outbound <= max_connections
    )
    return {
        "snapshots": snapshots,
        "peak_under_load": peaks,
        "max_connections": max_connections,
        "flat_and_bounded": flat,
    }


# --- profile -------------------------------------------------------------------------------

_CATEGORIES = [
    (f"{PACKAGE}/core/transport", "template: outbound chain (transport.py)"),
    (f"{PACKAGE}/core/pool", "template: aiohttp pool adapter (pool.py)"),
    (f"{PACKAGE}/core/http_client", "template: shared client (http_client.py)"),
    (f"{PACKAGE}/core/middleware", "template: request middleware"),
    (f"{PACKAGE}/", "template: other modules"),
    ("stamina", "stamina + tenacity (retry loop)"),
    ("tenacity", "stamina + tenacity (retry loop)"),
    ("structlog", "structlog"),
    ("opentelemetry", "opentelemetry"),
    ("prometheus_client", "prometheus_client"),
    ("httpx2/", "httpx2 client"),
    ("httpcore2", "httpcore2"),
    ("aiohttp", "aiohttp"),
    ("yarl", "aiohttp"),
    ("multidict", "aiohttp"),
    ("fastapi", "fastapi"),
    ("starlette", "starlette"),
    ("pydantic", "pydantic"),
    ("uvicorn", "uvicorn"),
    ("anyio", "anyio (worker threads)"),
]


def _category(frame: str) -> str:
    for needle, name in _CATEGORIES:
        if needle in frame:
            return name
    return "other"


def summarize_profile(raw: Path) -> dict[str, Any]:
    """Self time by library (where the CPU is spent) and the busiest functions."""
    by_library: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        leaf = frames[-1]
        if "Condition.wait" in leaf or "(threading.py" in leaf:
            continue  # idle worker threads
        n = int(count)
        total += n
        # Self time goes to the innermost frame that belongs to a known library.
        owner = next((_category(f) for f in reversed(frames) if _category(f) != "other"), "other")
        by_library[owner] += n
        by_function[re.sub(r":\d+\)", ")", leaf)] += n
    share = {k: round(100 * v / total, 1) for k, v in by_library.most_common()} if total else {}
    top = [(k, round(100 * v / total, 1)) for k, v in by_function.most_common(20)] if total else []
    return {"samples": total, "self_time_percent_by_library": share, "top_functions": top}


def profile(binary: str, service: Scenario, seconds: int, out: Path) -> dict[str, Any]:
    """py-spy's self time by library for ``service`` under load, or ``{"skipped": reason}``.

    py-spy pauses the process for each sample: without the pause (``--nonblocking``) about two
    samples in three caught a coroutine's stack half-unwound, with no root, which made the time
    under each frame meaningless. The pauses do not touch the load cells, which run apart."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        say("profile: py-spy not found, skipped")
        return {"skipped": "py-spy not found"}
    say(f"profile: py-spy on {service.key} for {seconds}s at c=32")
    load = threading.Thread(target=wrk, args=(binary, service.url, 32, seconds + 2))
    load.start()
    time.sleep(1)
    recorded = subprocess.run(
        [
            py_spy,
            "record",
            "-p",
            str(service.pid),
            "-d",
            str(seconds),
            "-r",
            "200",
            "-f",
            "raw",
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    load.join()
    if recorded.returncode != 0 or not out.exists():
        errors = [line for line in recorded.stderr.splitlines() if line.startswith("Error")]
        reason = f"py-spy failed: {errors[0] if errors else recorded.stderr.strip()[-300:]}"
        say(f"profile: {reason}, skipped")
        return {"skipped": reason}
    out.write_text(shorten_paths(out.read_text()))
    return summarize_profile(out)


# A frame's file as an absolute path (py-spy writes one where it cannot shorten it).
_ABSOLUTE_DIRS = re.compile(r"(?:^|(?<=[\s;(]))/[^\s;():]+/(?=[^/\s;():]+/[^/\s;():]+\.py\b)", re.M)


def shorten_paths(stacks: str) -> str:
    """Frames as ``package/module.py``, as py-spy writes most of them: the results are
    committed, and where the render was installed on this machine is nobody's business."""
    return _ABSOLUTE_DIRS.sub("", stacks)


# --- a run's load plan, and the cost by layer ----------------------------------------------


def interleaved_cells(
    binary: str,
    plan: list[Scenario],
    concurrencies: tuple[int, ...],
    repetitions: int,
    seconds: int,
    warmup: int,
) -> list[dict[str, Any]]:
    """Every (scenario, concurrency) cell once per repetition, in a rotated order, so that a
    noisy moment on the machine hits all scenarios alike; each cell starts once every service is
    idle."""
    cells: list[dict[str, Any]] = []
    total = repetitions * sum(len(s.concurrency) for s in plan)
    for rep in range(repetitions):
        for c in concurrencies:
            batch = [s for s in plan if c in s.concurrency]
            shift = (rep * 3 + concurrencies.index(c)) % len(batch)
            for scenario in batch[shift:] + batch[:shift]:
                waited = settle(plan)
                cell = measure_cell(binary, scenario, c, seconds, warmup)
                cells.append(
                    {"scenario": scenario.key, "c": c, "rep": rep + 1, **cell, "settle_s": waited}
                )
                say(
                    f"[{len(cells):2d}/{total}] rep {rep + 1} c={c:<3d} {scenario.key:15s} "
                    f"{cell['rps']:8.0f} rps  p99 {cell['p99_ms']:8.1f} ms  "
                    f"cpu {cell['cpu_us_per_request'] or 0:7.0f} us/req"
                    + (f"  errors {cell['errors']}" if cell["errors"] else "")
                )
    return cells


def micro_layers(project: Path, rounds: int, out: Path) -> dict[str, Any]:
    """CPU per request by layer, in-process (bench/micro.py in the render's interpreter, on the
    services' core)."""
    say("micro: CPU per request by layer, in-process")
    run(
        [
            *pin(1),
            str(project / ".venv/bin/python"),
            str(BENCH / "micro.py"),
            "--package",
            PACKAGE,
            "--rounds",
            str(rounds),
            "--requests",
            "600",
            "--json",
            str(out),
        ],
        cwd=project,
    )
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded
