"""The benchmark behind docs/performance.md: the rendered service's outbound path against the
gateways a team would write by hand. `make bench` runs it; it takes about 8-9 minutes.

    .venv/bin/python -m bench.run [--quick] [--results bench/results]

1. Renders the template's working tree with the defaults (and once with ``include_metrics=false``),
   installs each render (``make install``), and starts, on loopback only:
   the stub downstream (bench/stub.py), the rendered service in each configuration below, and the
   hand-written gateways (bench/gateways.py). Services are pinned to one core, and wrk and the
   stub to the other, when ``taskset`` exists.
2. Loads every scenario with wrk (one thread; 1, 32 and 128 connections; a short warm-up, then a
   fixed-length run), interleaved: each repetition runs every cell once, in a rotated order, so
   that a noisy moment on the machine hits all scenarios alike. Reports medians over repetitions,
   and the ratios of A to the others.
3. Checks the rendered service's file descriptors, ESTABLISHED connections and RSS before and
   after 10k and 100k more requests, and the peak of outbound connections during that load.
4. Breaks the service's CPU cost per request down by layer (bench/micro.py, in-process), and
   profiles it under load with py-spy.
5. Writes bench/results/: results.json, results.md (tables) and results.png (chart).

Scenarios (``GET /users/{id}``, the service calls the stub's ``/users/{id}`` and returns it):
  A  the rendered service, full default stack (aiohttp pool, JSON logs, tracing with sample ratio
     1 and no exporter, retries, breaker, metrics)
  B  the same with one option changed: httpx2's own pool, sample ratio 0, OTLP export on (to the
     stub), logging off (level WARNING), metrics left out of the render (c=32 only)
  C  plain FastAPI, one shared httpx2.AsyncClient, default transport
  D  plain FastAPI, one shared aiohttp.ClientSession
  E  plain FastAPI, a new httpx2.AsyncClient per request (the seed's anti-pattern)
  F  plain FastAPI, no outbound call (the ceiling)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.interpreters import PYTHON_VERSIONS, put_found_on_path
from harness.support import DEFAULT_ANSWERS, REPO_ROOT, free_port, render, run, wait_http

BENCH = REPO_ROOT / "bench"
WORK = REPO_ROOT / ".cache" / "bench"
PACKAGE = DEFAULT_ANSWERS["package_name"]
PREFIX = PACKAGE.upper() + "_"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STARTED = time.monotonic()

# (ratio, concurrency, target, stretch target): throughput ratios are at least the target,
# p99 ratios at most.
TARGETS: tuple[tuple[str, int, float, float | None], ...] = (
    ("A/D", 32, 0.5, 0.6),
    ("A/C", 32, 2.0, None),
    ("A/E", 32, 40.0, None),
    ("p99 A/D", 32, 1.5, None),
    ("p99 A/D", 128, 1.5, None),
)


def say(message: str) -> None:
    """Progress, with the time since the start."""
    elapsed = time.monotonic() - STARTED
    print(f"[{int(elapsed) // 60:2d}:{int(elapsed) % 60:02d}] {message}", flush=True)


def pin(cpu: int) -> list[str]:
    """``taskset -c cpu`` when available and there are two cores or more."""
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


def prepare_environment() -> None:
    """What `make bench` sets up, for runs started with python -m: the bootstrapped uv first on
    PATH (renders call it), the render's Python found on this machine (so uv downloads none where
    one is installed), one uv cache for every render, and a clean stop on SIGTERM (the
    ``finally`` blocks stop every process a run started)."""
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    put_found_on_path()
    os.environ.setdefault("UV_CACHE_DIR", str(REPO_ROOT / ".cache" / "uv"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def ensure_wrk() -> str:
    """wrk's path; installs Debian's package when missing and running as root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(
            "wrk is not installed, and this user cannot install it. Install it first, for "
            "example: sudo apt-get install -y wrk (Debian/Ubuntu) or brew install wrk (macOS)."
        )
    say("installing wrk (apt-get install -y wrk)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)
    found = shutil.which("wrk")
    if not found:
        sys.exit("apt-get installed wrk, but it is not on PATH")
    return found


# --- processes -----------------------------------------------------------------------------

_TAKEN: set[int] = set()


def unique_port() -> int:
    """A free loopback port that no other scenario of this run was given (the OS may hand out
    the same free port twice before anything binds it)."""
    while True:
        port = free_port()
        if port not in _TAKEN:
            _TAKEN.add(port)
            return port


@dataclass
class Scenario:
    key: str
    label: str
    group: str
    concurrency: tuple[int, ...]
    command: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=unique_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


def start(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def assert_running(plan: list[Scenario]) -> None:
    """Every scenario's own process is up (not another one that answered on its port)."""
    for scenario in plan:
        assert scenario.process is not None
        if scenario.process.poll() is not None:
            raise SystemExit(f"{scenario.key} exited ({scenario.process.returncode}); see its log")


def settle(plan: list[Scenario], timeout: float = 30.0) -> float:
    """Wait until every service is idle, so that the next cell has its core to itself.

    A server keeps working on requests whose client has gone: after a run of the anti-pattern
    (E) at c=128, its backlog burns the core for seconds, and would slow whichever scenario ran
    next. Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = sum(cpu_seconds(s.pid) for s in plan)
        time.sleep(0.25)
        if sum(cpu_seconds(s.pid) for s in plan) - before < 0.02:  # under 8% of a core
            break
    return round(time.monotonic() - started, 2)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


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
    cpu_before = cpu_seconds(scenario.pid)
    result = wrk(binary, scenario.url, connections, seconds)
    cpu_used = cpu_seconds(scenario.pid) - cpu_before
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
    (f"{PACKAGE}/core/http_client", "template: aiohttp pool adapter (http_client.py)"),
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
    """py-spy's self time by library for ``service`` under load, or ``{"skipped": reason}``."""
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
            "--nonblocking",
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


# --- setup ---------------------------------------------------------------------------------


def prepare_render(name: str, answers: dict[str, Any]) -> Path:
    destination = WORK / name
    if destination.exists():
        shutil.rmtree(destination)
    say(f"render: {name} {answers or '(defaults)'}")
    render(destination, {**DEFAULT_ANSWERS, **answers})
    run(["make", "install"], cwd=destination)
    return destination


def scenarios(
    default: Path, no_metrics: Path, stub_port: int, all_c: tuple[int, ...], b_c: tuple[int, ...]
) -> list[Scenario]:
    def service(
        key: str, label: str, group: str, project: Path, concurrency: tuple[int, ...], **env: str
    ) -> Scenario:
        scenario = Scenario(
            key,
            label,
            group,
            concurrency,
            [*pin(1), str(project / ".venv/bin/python"), "-m", PACKAGE],
            project,
        )
        scenario.env = {
            f"{PREFIX}HOST": "127.0.0.1",
            f"{PREFIX}PORT": str(scenario.port),
            f"{PREFIX}LOG_FORMAT": "json",
            f"{PREFIX}USERS_SERVICE__BASE_URL": f"http://127.0.0.1:{stub_port}",
            **{f"{PREFIX}{name}": value for name, value in env.items()},
        }
        return scenario

    def gateway(key: str, label: str) -> Scenario:
        scenario = Scenario(key, label, key, all_c, [], default)
        scenario.command = [
            *pin(1),
            str(default / ".venv/bin/python"),
            str(BENCH / "gateways.py"),
            "--scenario",
            key,
            "--port",
            str(scenario.port),
            "--downstream",
            f"http://127.0.0.1:{stub_port}",
        ]
        return scenario

    otlp = f"http://127.0.0.1:{stub_port}/v1/traces"
    return [
        service("A", "rendered service, full default stack", "A", default, all_c),
        service(
            "B:httpx-pool",
            "A with HTTP__TRANSPORT=httpx (httpx2's own pool)",
            "B",
            default,
            b_c,
            HTTP__TRANSPORT="httpx",
        ),
        service(
            "B:ratio-0",
            "A with TRACING__SAMPLE_RATIO=0",
            "B",
            default,
            b_c,
            TRACING__SAMPLE_RATIO="0",
        ),
        service(
            "B:otlp-on",
            "A with OTLP export on (spans recorded and exported)",
            "B",
            default,
            b_c,
            TRACING__OTLP_ENDPOINT=otlp,
        ),
        service(
            "B:logging-off",
            "A with LOG_LEVEL=WARNING (no request/outbound lines)",
            "B",
            default,
            b_c,
            LOG_LEVEL="WARNING",
        ),
        service("B:no-metrics", "A rendered with include_metrics=false", "B", no_metrics, b_c),
        gateway("C", "plain FastAPI, shared httpx2.AsyncClient"),
        gateway("D", "plain FastAPI, shared aiohttp.ClientSession"),
        gateway("E", "plain FastAPI, new httpx2.AsyncClient per request"),
        gateway("F", "plain FastAPI, no outbound call (ceiling)"),
    ]


def versions(project: Path) -> dict[str, str]:
    names = [
        "fastapi",
        "starlette",
        "uvicorn",
        "uvloop",
        "httptools",
        "httpx2",
        "httpcore2",
        "aiohttp",
        "opentelemetry-sdk",
        "structlog",
        "stamina",
        "pydantic",
        "orjson",
    ]
    # Asked of the render's interpreter: the scenarios run on it, not on the harness's.
    code = (
        "import importlib.metadata as m, json, platform; "
        f"print(json.dumps({{**{{n: m.version(n) for n in {names!r}}}, "
        "'python': platform.python_version()}))"
    )
    found = run([str(project / ".venv/bin/python"), "-c", code], cwd=project).stdout
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        **json.loads(found),
        "wrk": (wrk_version.stdout or wrk_version.stderr).split("\n")[0].strip(),
    }


# --- analysis ------------------------------------------------------------------------------


def medians(cells: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    grouped: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for cell in cells:
        grouped.setdefault((cell["scenario"], cell["c"]), []).append(cell)
    table: dict[str, dict[str, dict[str, float]]] = {}
    for (key, c), runs in grouped.items():
        table.setdefault(key, {})[str(c)] = {
            metric: round(statistics.median(r[metric] for r in runs if r[metric] is not None), 2)
            for metric in ("rps", "p50_ms", "p99_ms", "cpu_us_per_request", "errors")
            if any(r[metric] is not None for r in runs)
        } | {"runs": len(runs)}
    return table


def ratios(cells: list[dict[str, Any]], table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A over C, D, E and F per concurrency: the ratio of medians, and its spread over the
    repetitions (each repetition's cells ran minutes apart at most)."""
    out: dict[str, dict[str, Any]] = {}
    reps = sorted({cell["rep"] for cell in cells})
    by = {(cell["scenario"], cell["c"], cell["rep"]): cell for cell in cells}
    for other in ("C", "D", "E", "F"):
        for c in sorted({cell["c"] for cell in cells if cell["scenario"] == "A"}):
            key = str(c)
            if key not in table.get(other, {}):
                continue
            per_rep = [
                by[("A", c, rep)]["rps"] / by[(other, c, rep)]["rps"]
                for rep in reps
                if ("A", c, rep) in by and (other, c, rep) in by and by[(other, c, rep)]["rps"]
            ]
            entry = out.setdefault(f"A/{other}", {})
            if not table[other][key]["rps"]:  # it served nothing (E at c=128 can time out)
                entry[key] = {"ratio": None, "note": f"{other} served no request"}
                continue
            entry[key] = {
                "ratio": round(table["A"][key]["rps"] / table[other][key]["rps"], 2),
                "per_rep_min": round(min(per_rep), 2),
                "per_rep_max": round(max(per_rep), 2),
            }
            if other == "D":
                p99 = out.setdefault("p99 A/D", {})
                p99[key] = {
                    "ratio": round(table["A"][key]["p99_ms"] / table["D"][key]["p99_ms"], 2)
                }
    return out


def judge(ratio_table: dict[str, Any], fd: dict[str, Any] | None) -> list[dict[str, Any]]:
    verdicts = []
    for name, c, target, stretch in TARGETS:
        entry = ratio_table.get(name, {}).get(str(c))
        if entry is None:
            continue
        measured = entry["ratio"]
        if measured is None:  # the other scenario served nothing: A is better by any factor
            verdicts.append({"target": f"{name} at c={c}", "measured": entry["note"], "met": True})
            continue
        at_most = name.startswith("p99")
        met = measured <= target if at_most else measured >= target
        verdict: dict[str, Any] = {
            "target": f"{name} {'<=' if at_most else '>='} {target} at c={c}",
            "measured": measured,
            "met": met,
        }
        if not met:
            verdict["short_by"] = (
                f"{measured / target:.2f}x the limit"
                if at_most
                else f"{measured / target:.0%} of the target ({target - measured:.2f} short)"
            )
        if stretch is not None:
            verdict["stretch"] = f">= {stretch}: {'met' if measured >= stretch else 'not met'}"
        verdicts.append(verdict)
    if fd is not None:
        peak = max(p["established_outbound"] for p in fd["peak_under_load"])
        verdicts.append(
            {
                "target": "file descriptors and connections flat, outbound <= max_connections",
                "measured": f"peak outbound {peak} of {fd['max_connections']}",
                "met": fd["flat_and_bounded"],
            }
        )
    return verdicts


# --- output --------------------------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    table = result["medians"]
    order = [s["key"] for s in result["scenarios"]]
    labels = {s["key"]: s["label"] for s in result["scenarios"]}
    cs = result["config"]["concurrency"]
    lines = [
        "# Benchmark results",
        "",
        f"{result['started']}; {result['config']['repetitions']} repetitions of "
        f"{result['config']['seconds']} s per cell after a {result['config']['warmup']} s warm-up; "
        f"wrk -t1; medians. Machine: {result['machine']['cpus']} cores, load average "
        f"{result['machine']['loadavg_start']} at the start. Read the ratios, not the absolute "
        "numbers: the machine is shared and noisy.",
        "",
        "## Throughput and latency",
        "",
        "| scenario | "
        + " | ".join(f"c={c} rps | c={c} p99 ms" for c in cs)
        + " | CPU us/req (c=32) |",
        "|---|" + "---:|---:|" * len(cs) + "---:|",
    ]
    for key in order:
        row = table.get(key, {})
        cells = []
        for c in cs:
            m = row.get(str(c))
            cells += [f"{m['rps']:.0f}", f"{m['p99_ms']:.1f}"] if m else ["", ""]
        cpu = row.get("32", {}).get("cpu_us_per_request")
        lines.append(f"| {key}: {labels[key]} | " + " | ".join(cells) + f" | {cpu or ''} |")
    lines += [
        "",
        "## A against the alternatives (ratio of median rps; per-repetition range)",
        "",
        "| ratio | " + " | ".join(f"c={c}" for c in cs) + " |",
        "|---|" + "---:|" * len(cs),
    ]
    for name, per_c in result["ratios"].items():
        cells = []
        for c in cs:
            r = per_c.get(str(c))
            if r is None:
                cells.append("")
            elif r["ratio"] is None:
                cells.append(r["note"])
            elif "per_rep_min" in r:
                cells.append(f"{r['ratio']} ({r['per_rep_min']}-{r['per_rep_max']})")
            else:
                cells.append(f"{r['ratio']}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## How CPU per request and p99 move with load",
        "",
        "| scenario | "
        + " | ".join(f"c={c} CPU us/req" for c in cs)
        + " | "
        + " | ".join(f"c={c} p99 ms" for c in cs)
        + " |",
        "|---|" + "---:|" * (2 * len(cs)),
    ]
    for key in order:
        row = table.get(key, {})
        if not all(str(c) in row for c in cs):
            continue  # the B scenarios run at c=32 only
        cpu = [f"{row[str(c)].get('cpu_us_per_request', 0):.0f}" for c in cs]
        p99 = [f"{row[str(c)]['p99_ms']:.1f}" for c in cs]
        lines.append(f"| {key} | " + " | ".join(cpu + p99) + " |")
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for v in result["targets"]:
        extra = f" ({v['short_by']})" if "short_by" in v else ""
        extra += f"; stretch {v['stretch']}" if "stretch" in v else ""
        lines.append(f"| {v['target']} | {v['measured']}{extra} | {'yes' if v['met'] else 'NO'} |")
    a32 = table.get("A", {}).get("32")
    if a32:
        lines += [
            "",
            "## What each option costs (c=32, against A)",
            "",
            "| option | rps | vs A | CPU us/req | CPU vs A |",
            "|---|---:|---:|---:|---:|",
        ]
        for key in order:
            if not key.startswith("B:") or "32" not in table.get(key, {}):
                continue
            b = table[key]["32"]
            extra = b["cpu_us_per_request"] - a32["cpu_us_per_request"]
            lines.append(
                f"| {labels[key]} | {b['rps']:.0f} | {b['rps'] / a32['rps']:.2f}x | "
                f"{b['cpu_us_per_request']:.0f} | {extra:+.0f} |"
            )
    if result.get("micro"):
        lines += [
            "",
            "## CPU per request by layer (in-process, no sockets; bench/micro.py)",
            "",
            "| variant | us/request | saves |",
            "|---|---:|---:|",
        ]
        for name, row in result["micro"].items():
            lines.append(f"| {name} | {row['us_per_request']} | {row['saves_us']} |")
    fd = result.get("fd_check")
    if fd:
        lines += [
            "",
            "## File descriptors, connections, memory (A)",
            "",
            "| when | requests | fds | ESTABLISHED out | ESTABLISHED in | TIME_WAIT to stub "
            "| RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for when, s in fd["snapshots"].items():
            lines.append(
                f"| {when} | {s.get('requests', 0)} | {s['fds']} | {s['established_outbound']} | "
                f"{s['established_inbound']} | {s['time_wait_to_downstream']} | "
                f"{s['rss_kib'] / 1024:.1f} |"
            )
        peak = max(p["established_outbound"] for p in fd["peak_under_load"])
        lines += [
            "",
            f"Peak outbound connections under load: {peak} (max_connections "
            f"{fd['max_connections']}). "
            f"Flat and bounded: {'yes' if fd['flat_and_bounded'] else 'NO'}.",
        ]
    prof = result.get("profile")
    if prof and "skipped" in prof:
        lines += ["", "## Where A's CPU goes", "", f"Not profiled in this run ({prof['skipped']})."]
    elif prof:
        lines += [
            "",
            f"## Where A's CPU goes (py-spy, {prof['samples']} samples, self time)",
            "",
            "| library | share |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {v}% |" for k, v in prof["self_time_percent_by_library"].items()]
    lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()), ""]
    return "\n".join(lines)


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result["medians"]
    cs = result["config"]["concurrency"]
    keys = [s["key"] for s in result["scenarios"]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(13, 9), constrained_layout=True)
    width = 0.8 / len(cs)
    colors = ["#9ecae1", "#3182bd", "#08519c"]
    for i, c in enumerate(cs):
        xs = [k + (i - (len(cs) - 1) / 2) * width for k in range(len(keys))]
        rps = [table.get(key, {}).get(str(c), {}).get("rps", 0) for key in keys]
        p99 = [table.get(key, {}).get(str(c), {}).get("p99_ms", 0) for key in keys]
        top.bar(xs, rps, width, label=f"c={c}", color=colors[i % 3])
        bottom.bar(xs, p99, width, label=f"c={c}", color=colors[i % 3])
    for axis, title in (
        (top, "requests per second (median, log scale)"),
        (bottom, "p99 latency, ms (median, log scale)"),
    ):
        axis.set_yscale("log")
        axis.set_xticks(range(len(keys)))
        axis.set_xticklabels([k.replace(":", ":\n") for k in keys], fontsize=9)
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
        axis.legend()
    d = result["ratios"].get("A/D", {}).get("32", {}).get("ratio")
    fig.suptitle(
        f"GET /users/{{id}} through each gateway (A = rendered service; A/D at c=32 = {d})"
    )
    fig.savefig(path, dpi=90)
    plt.close(fig)


# --- main ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=BENCH / "results")
    parser.add_argument("--quick", action="store_true", help="one short repetition at c=32")
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument(
        "--python",
        choices=PYTHON_VERSIONS,
        help="render (and run every scenario) on this Python; the template's default otherwise",
    )
    args = parser.parse_args()
    all_c: tuple[int, ...] = (1, 32, 128)
    fd_counts = (10_000, 100_000)
    if args.quick:
        args.seconds, args.repetitions, all_c, fd_counts = 2, 1, (32,), (2_000, 5_000)
    b_c = (32,)

    prepare_environment()
    binary = ensure_wrk()
    WORK.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    logs = WORK / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    loadavg_start = round(os.getloadavg()[0], 2)

    version = {"python_version": args.python} if args.python else {}
    default = prepare_render("default", version)
    no_metrics = prepare_render("no-metrics", {**version, "include_metrics": False})

    stub_port = unique_port()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        stub = start(
            [
                *pin(0),
                str(default / ".venv/bin/python"),
                str(BENCH / "stub.py"),
                "--port",
                str(stub_port),
            ],
            BENCH,
            {},
            logs / "stub.log",
        )
        processes.append(stub)
        wait_http(f"http://127.0.0.1:{stub_port}/users/1")
        plan = scenarios(default, no_metrics, stub_port, all_c, b_c)
        say(f"starting {len(plan)} services (one core) and the stub downstream (the other)")
        for scenario in plan:
            scenario.process = start(
                scenario.command,
                scenario.cwd,
                scenario.env,
                logs / f"{scenario.key.replace(':', '-')}.log",
            )
            processes.append(scenario.process)
        for scenario in plan:
            wait_http(f"{scenario.url}/readyz", timeout=90)
            wait_http(f"{scenario.url}/users/1", timeout=10)
        assert_running(plan)

        cells: list[dict[str, Any]] = []
        total = args.repetitions * sum(len(s.concurrency) for s in plan)
        for rep in range(args.repetitions):
            for c in all_c:
                batch = [s for s in plan if c in s.concurrency]
                shift = (rep * 3 + all_c.index(c)) % len(batch)
                for scenario in batch[shift:] + batch[:shift]:
                    waited = settle(plan)
                    cell = measure_cell(binary, scenario, c, args.seconds, args.warmup)
                    cells.append(
                        {
                            "scenario": scenario.key,
                            "c": c,
                            "rep": rep + 1,
                            **cell,
                            "settle_s": waited,
                        }
                    )
                    say(
                        f"[{len(cells):2d}/{total}] rep {rep + 1} c={c:<3d} {scenario.key:15s} "
                        f"{cell['rps']:8.0f} rps  p99 {cell['p99_ms']:8.1f} ms  "
                        f"cpu {cell['cpu_us_per_request'] or 0:7.0f} us/req"
                        + (f"  errors {cell['errors']}" if cell["errors"] else "")
                    )

        # Kept at once: a failure in a later step must not lose the load runs.
        (args.results / "cells.json").write_text(json.dumps(cells, indent=2) + "\n")
        settle(plan)
        service_a = plan[0]
        max_connections = 200  # the rendered default (HTTP__MAX_CONNECTIONS)
        a_rate = statistics.median(c["rps"] for c in cells if c["scenario"] == "A")
        fd = fd_check(binary, service_a, stub_port, max_connections, fd_counts, a_rate)
        prof = profile(binary, service_a, 3 if args.quick else 5, args.results / "profile-A.txt")
    finally:
        for process in reversed(processes):
            stop(process)

    say("micro: CPU per request by layer, in-process")
    micro_json = WORK / "micro.json"
    run(
        [
            *pin(1),
            str(default / ".venv/bin/python"),
            str(BENCH / "micro.py"),
            "--package",
            PACKAGE,
            "--rounds",
            "3" if args.quick else "7",
            "--requests",
            "600",
            "--json",
            str(micro_json),
        ],
        cwd=default,
    )
    micro = json.loads(micro_json.read_text())

    table = medians(cells)
    ratio_table = ratios(cells, table)
    result: dict[str, Any] = {
        "started": started,
        "config": {
            "concurrency": list(all_c),
            "repetitions": args.repetitions,
            "seconds": args.seconds,
            "warmup": args.warmup,
            "quick": args.quick,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_start": loadavg_start,
            "loadavg_end": round(os.getloadavg()[0], 2),
            "pinned": bool(pin(0)),
        },
        "versions": versions(default),
        "scenarios": [
            {"key": s.key, "label": s.label, "group": s.group, "concurrency": list(s.concurrency)}
            for s in plan
        ],
        "cells": cells,
        "medians": table,
        "ratios": ratio_table,
        "targets": judge(ratio_table, fd),
        "fd_check": fd,
        "micro": micro,
        "profile": prof,
    }
    (args.results / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "results.md").write_text(markdown(result))
    chart(result, args.results / "results.png")
    shutil.rmtree(logs, ignore_errors=True)
    say(f"wrote {args.results}/results.json, results.md and results.png")
    print()
    print(markdown(result))


if __name__ == "__main__":
    main()
