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
from bench.analysis import judge, medians, ratios
from bench.measure import fd_check, interleaved_cells, micro_layers, profile, settle
from bench.processes import (
    ensure_wrk,
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
    return parser.parse_args()


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
    no_metrics = prepare_render("no-metrics", {**version, "include_metrics": False})

    stub_port = unique_port()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        plan = start_all(default, no_metrics, stub_port, all_c, b_c, logs, processes)
        cells = interleaved_cells(binary, plan, all_c, args.repetitions, args.seconds, args.warmup)
        write_cells(cells, args.results)
        settle(plan)
        service_a = plan[0]
        max_connections = 200  # the rendered default (HTTP__MAX_CONNECTIONS)
        a_rate = statistics.median(c["rps"] for c in cells if c["scenario"] == "A")
        fd = fd_check(binary, service_a, stub_port, max_connections, fd_counts, a_rate)
        prof = profile(binary, service_a, 3 if args.quick else 5, args.results / "profile-A.txt")
    finally:
        for process in reversed(processes):
            stop_process(process)

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
    write_results(result, args.results)
    shutil.rmtree(logs, ignore_errors=True)
    say(f"wrote {args.results}/results.json, results.md and results.png")
    print()
    print(markdown(result))


if __name__ == "__main__":
    main()
