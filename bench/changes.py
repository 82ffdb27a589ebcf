"""What each of the template's performance changes is worth: the rendered service as it is, and
the same service with one change undone, side by side under the same load.

    .venv/bin/python -m bench.changes [--baseline GIT-REF] [--repetitions 3] [--seconds 4]
        [--only KEY ...]

Every variant is the current render with one file patched back (run from a copy of ``src/``
that shadows the installed package through PYTHONPATH), so the difference to "current" is what
that change saves on this machine now. ``--baseline`` also renders the template at a git commit
(from ``git archive``; nothing in this repository changes) and loads it as "baseline". One
repetition runs every variant once at c=32, in a rotated order; medians are reported. Writes
bench/results/changes.json and changes.md. Takes about 3 minutes (4 with a baseline).

It also measures PROPOSALS: changes to modules this benchmark does not own (the outbound chain,
the example client, metrics), applied the same way, to put a number on each before it is made.
A proposal whose patch no longer applies (the module changed) is skipped with a message.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BENCH, RESULTS, WORK
from bench.measure import measure_cell, settle
from bench.processes import (
    PACKAGE,
    PREFIX,
    Scenario,
    assert_running,
    ensure_wrk,
    pin,
    prepare_environment,
    prepare_render,
    say,
    start,
    unique_port,
)
from harness.support import REPO_ROOT, run, stop_process, wait_http


@dataclass(frozen=True)
class Revert:
    key: str
    label: str
    path: str  # under src/<package>/
    old: str  # text in the current file
    new: str  # what it was before the change


REVERTS = [
    Revert(
        "tracer:sdk",
        "SDK tracer even without an exporter (PropagatingTracer undone)",
        "core/tracing.py",
        "tracer=PropagatingTracer(sampler, ids), recording=False)",
        "tracer=provider.get_tracer(__name__), recording=False)",
    ),
    Revert(
        "cookies:kept",
        "plain httpx2.AsyncClient: a cookie jar kept, httpx2's send for every call",
        "core/http_client.py",
        "return _SharedClient(",
        "return httpx2.AsyncClient(",
    ),
    Revert(
        "send:httpx",
        "httpx2's own send for every call (auth flow, redirect loop, hooks, stream wrapper)",
        "core/http_client.py",
        "        if not self._sends_as_is(request, stream, auth, follow_redirects):",
        "        if True:",
    ),
    Revert(
        "read:aread",
        "the body read through httpx2's aread (its stream layers around the bounded body)",
        "core/http_client.py",
        "        await _read_body(response)\n",
        "        try:\n            await response.aread()\n        except BaseException:\n"
        "            await response.aclose()\n            raise\n",
    ),
    Revert(
        "cookies:new-jar-per-call",
        "a new empty cookie jar on each access to the shared client's cookies (twice a call)",
        "core/http_client.py",
        "        return _NO_COOKIES\n",
        "        return _NoCookies()\n",
    ),
    Revert(
        "request-id:uuid4",
        "a new request id from uuid4().hex instead of secrets.token_hex(16)",
        "core/middleware.py",
        "return secrets.token_hex(16)",
        "return __import__('uuid').uuid4().hex",
    ),
    Revert(
        "dependency:sync",
        "get_http_client as a plain def (a worker-thread hop per request)",
        "core/http_client.py",
        "async def get_http_client(",
        "def get_http_client(",
    ),
    Revert(
        "users:sync-dependency",
        "users.py: get_users_client as a plain def (a worker-thread hop per request)",
        "users.py",
        "\nasync def get_users_client(",
        "\ndef get_users_client(",
    ),
    Revert(
        "users:nested-dependency",
        "users.py: get_users_client nested on SharedHttpClient, a UsersClient built per request",
        "users.py",
        "async def get_users_client(request: Request) -> UsersClient:",
        "async def get_users_client(request: Request, http: SharedHttpClient) -> UsersClient:\n"
        "    return UsersClient(http, str(request.app.state.settings.users_service.base_url))\n\n\n"
        "async def _flat_get_users_client(request: Request) -> UsersClient:",
    ),
    Revert(
        "cycle:kept",
        "responses freed by the cyclic garbage collector (the response/stream cycle kept)",
        "core/transport.py",
        "self._response.stream = _CLOSED_BODY",
        "pass",
    ),
    Revert(
        "logs:uncached",
        "structlog loggers not cached on first use",
        "core/log.py",
        "cache_logger_on_first_use=True",
        "cache_logger_on_first_use=False",
    ),
    Revert(
        "gc:not-frozen",
        "startup objects not frozen out of the garbage collector (gc.freeze undone)",
        "__main__.py",
        "    gc.collect()\n    gc.freeze()\n",
        "",
    ),
    Revert(
        "server:asyncio-h11",
        "uvicorn on asyncio and h11 instead of uvloop and httptools",
        "__main__.py",
        'loop="uvloop",\n        http="httptools",',
        'loop="asyncio",\n        http="h11",',
    ),
]


PROPOSALS: list[Revert] = []


def variant_source(project: Path, key: str, patches: list[Revert]) -> Path | None:
    """A copy of the render's ``src`` with ``patches`` applied; None if one no longer applies."""
    root = WORK / "changes" / key.replace(":", "-")
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(project / "src", root / "src")
    for patch in patches:
        target = root / "src" / PACKAGE / patch.path
        text = target.read_text() if target.exists() else ""
        if patch.old not in text:
            say(f"{key}: {patch.path} no longer has the text this patch replaces; skipped")
            return None
        target.write_text(text.replace(patch.old, patch.new, 1))
    return root


def short_commit(ref: str) -> str:
    return run(["git", "rev-parse", "--short", ref], cwd=REPO_ROOT).stdout.strip()


def render_at(ref: str) -> Path:
    """The template at git ``ref``, rendered and installed (the working tree is untouched)."""
    source = WORK / "baseline-src"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "archive", "--format=tar", ref], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(source, filter="data")
    from harness.support import DEFAULT_ANSWERS, render

    project = WORK / "baseline"
    shutil.rmtree(project, ignore_errors=True)
    say(f"render: the template at {ref}")
    render(project, DEFAULT_ANSWERS, src=source, vcs_ref=None)
    run(["make", "install"], cwd=project)
    return project


def changes_markdown(rows: list[dict[str, Any]]) -> list[str]:
    current = rows[0]
    lines = [
        "# What each template change is worth (c=32, medians)",
        "",
        "Each row is the current render with one change undone (or, for a PROPOSAL, one more "
        "change made), loaded side by side. An undone change costing +N us of CPU per request "
        "means the change saves N us; a proposal at -N us would save N us.",
        "",
        "| variant | rps | CPU us/req | p99 ms | CPU vs current | rps vs current |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        delta = row["cpu_us_per_request"] - current["cpu_us_per_request"]
        ratio = row["rps"] / current["rps"] if current["rps"] else 0
        lines.append(
            f"| {row['label']} | {row['rps']:.0f} | {row['cpu_us_per_request']:.0f} | "
            f"{row['p99_ms']} | {delta:+.0f} us | {ratio:.2f}x |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="also load the template at this git ref")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--no-proposals", dest="proposals", action="store_false", help="skip the PROPOSALS"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="KEY",
        help="load only this variant (a key such as users:sync-dependency) beside current; "
        "repeatable",
    )
    args = parser.parse_args()
    prepare_environment()
    binary = ensure_wrk()
    logs = WORK / "changes-logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    project = prepare_render("default", {})
    baseline = render_at(args.baseline) if args.baseline else None

    stub_port = unique_port()
    python = str(project / ".venv/bin/python")

    def service(key: str, label: str, cwd: Path, py: str, **env: str) -> Scenario:
        scenario = Scenario(key, label, "changes", (32,), [*pin(1), py, "-m", PACKAGE], cwd)
        scenario.env = {
            f"{PREFIX}HOST": "127.0.0.1",
            f"{PREFIX}PORT": str(scenario.port),
            f"{PREFIX}USERS_SERVICE__BASE_URL": f"http://127.0.0.1:{stub_port}",
            **env,
        }
        return scenario

    plan = [service("current", "the template as it is (all changes)", project, python)]
    if not args.only or "pool:httpx" in args.only:
        plan.append(
            service(
                "pool:httpx",
                "httpx2's own pool instead of aiohttp (HTTP__TRANSPORT=httpx)",
                project,
                python,
                **{f"{PREFIX}HTTP__TRANSPORT": "httpx"},
            )
        )
    applied = []
    variants = [(r.key, r.label, [r]) for r in REVERTS]
    if args.proposals:
        variants += [(p.key, p.label, [p]) for p in PROPOSALS]
    if args.only:
        variants = [variant for variant in variants if variant[0] in args.only]
    for key, label, patches in variants:
        root = variant_source(project, key, patches)
        if root is not None:
            plan.append(service(key, label, root, python, PYTHONPATH=str(root / "src")))
            applied += [p for p in patches if p in PROPOSALS]
    if len(applied) > 1:
        root = variant_source(project, "proposal:all", applied)
        if root is not None:
            label = "PROPOSALS: all of them together"
            plan.append(service("proposal:all", label, root, python, PYTHONPATH=str(root / "src")))
    if baseline is not None:
        plan.append(
            service(
                "baseline",
                f"the template before these changes ({short_commit(args.baseline)})",
                baseline,
                str(baseline / ".venv/bin/python"),
            )
        )

    processes = []
    cells: list[dict[str, Any]] = []
    try:
        stub = start(
            [*pin(0), python, str(BENCH / "stub.py"), "--port", str(stub_port)],
            BENCH,
            {},
            logs / "stub.log",
        )
        processes.append(stub)
        wait_http(f"http://127.0.0.1:{stub_port}/users/1")
        for scenario in plan:
            scenario.process = start(
                scenario.command, scenario.cwd, scenario.env, logs / f"{scenario.key}.log"
            )
            processes.append(scenario.process)
        for scenario in plan:
            wait_http(f"{scenario.url}/readyz", timeout=90)
        assert_running(plan)
        total = args.repetitions * len(plan)
        for rep in range(args.repetitions):
            shift = rep % len(plan)
            for scenario in plan[shift:] + plan[:shift]:
                settle(plan)
                cell = measure_cell(binary, scenario, 32, args.seconds, 1)
                cells.append({"variant": scenario.key, "rep": rep + 1, **cell})
                say(
                    f"[{len(cells):2d}/{total}] {scenario.key:20s} {cell['rps']:7.0f} rps  "
                    f"cpu {cell['cpu_us_per_request']:6.0f} us/req  p99 {cell['p99_ms']:.1f} ms"
                )
    finally:
        for process in reversed(processes):
            stop_process(process)

    rows = []
    for scenario in plan:
        mine = [c for c in cells if c["variant"] == scenario.key]
        rows.append(
            {
                "variant": scenario.key,
                "label": scenario.label,
                "rps": round(statistics.median(c["rps"] for c in mine), 1),
                "cpu_us_per_request": round(
                    statistics.median(c["cpu_us_per_request"] for c in mine), 1
                ),
                "p99_ms": round(statistics.median(c["p99_ms"] for c in mine), 1),
            }
        )
    (args.results / "changes.md").parent.mkdir(parents=True, exist_ok=True)
    lines = changes_markdown(rows)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "changes.json").write_text(
        json.dumps({"rows": rows, "cells": cells}, indent=2) + "\n"
    )
    (args.results / "changes.md").write_text("\n".join(lines) + "\n")
    shutil.rmtree(logs, ignore_errors=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
