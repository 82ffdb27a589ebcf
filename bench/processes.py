"""Setting up and controlling what the benchmark loads: its tools (wrk, the render's Python,
granian), the renders, the stub, service and gateway processes and the cores they are pinned
to."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import BENCH, WORK
from harness.interpreters import put_found_on_path
from harness.support import DEFAULT_ANSWERS, REPO_ROOT, free_port, render, run, wait_http

PACKAGE = DEFAULT_ANSWERS["package_name"]
PREFIX = PACKAGE.upper() + "_"
STARTED = time.monotonic()

# The servers the A and D scenarios can run under (--servers). uvicorn is the template's own
# (uvloop and httptools, from the render); granian is installed into the render's environment
# for the run, from the package index (docs/decisions/0014-asgi-server.md).
SERVERS = ("uvicorn", "granian")
GRANIAN = "granian>=2.8,<2.9"
# granian as the benchmark runs it: ASGI, uvloop, one worker process, HTTP/1 only, no access
# log; the app is a factory of bench/granian_apps.py (the repository on PYTHONPATH).
GRANIAN_OPTIONS = (
    "--interface",
    "asgi",
    "--loop",
    "uvloop",
    "--workers",
    "1",
    "--http",
    "1",
    "--no-access-log",
    "--log-level",
    "warning",
    "--factory",
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
    server: str = "uvicorn"
    # The process and its children, once it serves (granian serves from a worker process its
    # main process starts); the CPU per request counts them all.
    pids: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid


def descendants(pid: int) -> list[int]:
    """The ids of the processes below ``pid`` (from /proc: the parent of each process)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # it exited meanwhile
        children.setdefault(parent, []).append(int(stat.parent.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


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


def prepare_render(name: str, answers: dict[str, Any]) -> Path:
    destination = WORK / name
    if destination.exists():
        shutil.rmtree(destination)
    say(f"render: {name} {answers or '(defaults)'}")
    render(destination, {**DEFAULT_ANSWERS, **answers})
    run(["make", "install"], cwd=destination)
    return destination


def install_granian(project: Path) -> None:
    """granian into the render's environment (uv, the bootstrapped one), for --servers granian."""
    say(f"installing {GRANIAN} into the render's environment")
    run(
        ["uv", "pip", "install", "--quiet", "--python", str(project / ".venv/bin/python"), GRANIAN],
        cwd=project,
    )


def granian_command(project: Path, port: int, target: str, *options: str) -> list[str]:
    """granian serving ``target`` (a factory of bench/granian_apps.py) on ``port``, with
    ``options`` besides the benchmark's, pinned to the services' core (its worker process
    inherits the pinning)."""
    return [
        *pin(1),
        str(project / ".venv/bin/python"),
        "-m",
        "granian",
        *GRANIAN_OPTIONS,
        *options,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        f"bench.granian_apps:{target}",
    ]


def scenarios(
    default: Path,
    no_metrics: Path | None,
    stub_port: int,
    all_c: tuple[int, ...],
    b_c: tuple[int, ...],
    servers: tuple[str, ...] = ("uvicorn",),
) -> list[Scenario]:
    """Every scenario of a run: A to G under uvicorn (B:no-metrics only with its render), and
    A and D under each other server in ``servers`` (keys ``A:granian``, ``D:granian``)."""

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

    def under_granian(base: Scenario) -> Scenario:
        app = base.key  # A or D
        scenario = Scenario(
            f"{app}:granian",
            f"{app} under granian (ASGI, uvloop, one worker, HTTP/1)",
            "servers",
            all_c,
            [],
            default,
            server="granian",
        )
        target = "rendered" if app == "A" else "gateway"
        scenario.command = granian_command(default, scenario.port, target)
        scenario.env = {
            **base.env,
            **({f"{PREFIX}PORT": str(scenario.port)} if app == "A" else {}),
            "PYTHONPATH": str(REPO_ROOT),
            "BENCH_PACKAGE": PACKAGE,
            "BENCH_GATEWAY": app,
            "BENCH_DOWNSTREAM": f"http://127.0.0.1:{stub_port}",
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
            "--package",
            PACKAGE,
        ]
        return scenario

    otlp = f"http://127.0.0.1:{stub_port}/v1/traces"
    plan = [
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
        *(
            [service("B:no-metrics", "A rendered with include_metrics=false", "B", no_metrics, b_c)]
            if no_metrics is not None
            else []
        ),
        gateway("C", "plain FastAPI, shared httpx2.AsyncClient"),
        gateway("D", "plain FastAPI, shared aiohttp.ClientSession"),
        gateway("E", "plain FastAPI, new httpx2.AsyncClient per request"),
        gateway("F", "plain FastAPI, no outbound call (ceiling)"),
        gateway("G", "plain FastAPI, shared httpx2.AsyncClient over A's aiohttp pool adapter"),
    ]
    if "granian" in servers:
        by_key = {s.key: s for s in plan}
        plan += [under_granian(by_key["A"]), under_granian(by_key["D"])]
    return plan


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
        "granian",
    ]
    # Asked of the render's interpreter: the scenarios run on it, not on the harness's. A name
    # not installed there (granian, without --servers granian) is left out.
    code = (
        "import importlib.metadata as m, json, platform\n"
        "found = {}\n"
        f"for n in {names!r}:\n"
        "    try: found[n] = m.version(n)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps({**found, 'python': platform.python_version()}))"
    )
    found = run([str(project / ".venv/bin/python"), "-c", code], cwd=project).stdout
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return {
        **json.loads(found),
        "wrk": (wrk_version.stdout or wrk_version.stderr).split("\n")[0].strip(),
    }


def start_all(
    default: Path,
    no_metrics: Path | None,
    stub_port: int,
    concurrencies: tuple[int, ...],
    b_concurrencies: tuple[int, ...],
    logs: Path,
    processes: list[subprocess.Popen[bytes]],
    servers: tuple[str, ...] = ("uvicorn",),
    only: tuple[str, ...] = (),
) -> list[Scenario]:
    """Start the stub downstream (on the load generator's core) and every scenario (on the
    other; ``only`` these keys when given), wait until each answers, and return the plan. Every
    process started is appended to ``processes`` at once, so that the caller stops it whatever
    fails next."""
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
    plan = scenarios(default, no_metrics, stub_port, concurrencies, b_concurrencies, servers)
    if only:
        unknown = sorted(set(only) - {s.key for s in plan})
        if unknown:
            raise SystemExit(f"no such scenario in this run: {', '.join(unknown)}")
        plan = [s for s in plan if s.key in only]
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
        scenario.pids = [scenario.pid, *descendants(scenario.pid)]
    assert_running(plan)
    return plan
