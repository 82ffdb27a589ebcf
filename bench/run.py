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

This module is the command; each job has its own module: bench/processes.py (tools, renders,
processes, pinning), bench/measure.py (load runs, /proc, CPU accounting, profile),
bench/analysis.py (medians, ratios, targets) and bench/report.py (tables, chart, files).

Scenarios (``GET /users/{id}``, the service calls the stub's ``/users/{id}`` and returns it):
  A  the rendered service, full default stack (aiohttp pool, JSON logs, tracing with sample ratio
     1 and no exporter, retries, breaker, metrics)
  B  the same with one option changed: httpx2's own pool, sample ratio 0, OTLP export on (to the
     stub), logging off (level WARNING), metrics left out of the render (c=32 only)
  C  plain FastAPI, one shared httpx2.AsyncClient, default transport
  D  plain FastAPI, one shared aiohttp.ClientSession
  E  plain FastAPI, a new httpx2.AsyncClient per request (the seed's anti-pattern)
  F  plain FastAPI, no outbound call (the ceiling)
  G  plain FastAPI, one shared httpx2.AsyncClient over A's aiohttp pool adapter and nothing else:
     what the httpx API itself costs over D, the floor of any A that offers it

With ``--servers uvicorn,granian``, A and D also run under granian (A:granian, D:granian: the same
apps, bench/granian_apps.py; granian is installed into the render's environment), side by side
with the rest, and results.md gets a table of A and D under each server with the ratios
between them. ``--scenarios`` loads only the scenarios named, ``--load-only`` skips steps 3 and
4; together they make a run of one question, for example the servers':

    .venv/bin/python -m bench.run --servers uvicorn,granian --scenarios A,D,A:granian,D:granian \
        --load-only --results bench/results/servers
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import RESULTS, WORK
from bench.analysis import judge, medians, ratios, server_comparison
from bench.measure import fd_check, interleaved_cells, micro_layers, profile, settle
from bench.processes import (
    SERVERS,
    ensure_wrk,
    install_granian,
    pin,
    prepare_environment,
    prepare_render,
    say,
    start_all,
    unique_port,
    versions,
)
from bench.report import markdown, write_cells, write_results
from harness.interpreters import PYTHON_VERSIONS
from harness.support import stop_process


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="one short repetition at c=32")
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument(
        "--python",
        choices=PYTHON_VERSIONS,
        help="render (and run every scenario) on this Python; the template's default otherwise",
    )
    parser.add_argument(
        "--servers",
        type=_servers,
        default=("uvicorn",),
        help="comma-separated servers A and D run under: uvicorn (always), granian "
        "(adds A:granian and D:granian); default uvicorn",
    )
    parser.add_argument(
        "--scenarios",
        type=lambda value: tuple(key.strip() for key in value.split(",") if key.strip()),
        default=(),
        help="comma-separated keys: load only these scenarios (for example A,D,A:granian)",
    )
    parser.add_argument(
        "--load-only",
        action="store_true",
        help="only the load runs: no descriptor check, profile or in-process layers",
    )
    return parser.parse_args()


def _servers(value: str) -> tuple[str, ...]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SERVERS))
    if unknown:
        msg = f"unknown server {', '.join(unknown)}; choose from {', '.join(SERVERS)}"
        raise argparse.ArgumentTypeError(msg)
    return tuple(s for s in SERVERS if s in {"uvicorn", *names})


def main() -> None:
    args = parse_args()
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
    no_metrics = None
    if not args.scenarios or "B:no-metrics" in args.scenarios:
        no_metrics = prepare_render("no-metrics", {**version, "include_metrics": False})
    if "granian" in args.servers:
        install_granian(default)

    stub_port = unique_port()
    processes: list[subprocess.Popen[bytes]] = []
    fd: dict[str, Any] | None = None
    prof: dict[str, Any] | None = None
    try:
        plan = start_all(
            default,
            no_metrics,
            stub_port,
            all_c,
            b_c,
            logs,
            processes,
            servers=args.servers,
            only=args.scenarios,
        )
        cells = interleaved_cells(binary, plan, all_c, args.repetitions, args.seconds, args.warmup)
        write_cells(cells, args.results)
        service_a = next((s for s in plan if s.key == "A"), None)
        if service_a is not None and not args.load_only:
            settle(plan)
            max_connections = 200  # the rendered default (HTTP__MAX_CONNECTIONS)
            a_rate = statistics.median(c["rps"] for c in cells if c["scenario"] == "A")
            fd = fd_check(binary, service_a, stub_port, max_connections, fd_counts, a_rate)
            profile_out = args.results / "profile-A.txt"
            prof = profile(binary, service_a, 3 if args.quick else 5, profile_out)
    finally:
        for process in reversed(processes):
            stop_process(process)

    micro = None
    if not args.load_only:
        micro = micro_layers(default, 3 if args.quick else 7, WORK / "micro.json")

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
            "servers": list(args.servers),
            "scenarios": list(args.scenarios),
            "load_only": args.load_only,
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
        "servers": server_comparison(cells, args.servers),
        "targets": judge(ratio_table, fd),
        "fd_check": fd,
        "micro": micro,
        "profile": prof,
    }
    write_results(result, args.results)
    shutil.rmtree(logs, ignore_errors=True)
    say(f"wrote {args.results}/results.json, results.md and results.png")
    print()
    print(markdown(result))


if __name__ == "__main__":
    main()
