"""The results files: results.json, results.md (the tables that docs/performance.md embeds),
results.png (the chart), and cells.json (the load runs alone, kept as soon as they end)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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
    ]
    lines += ratio_table(result["ratios"], cs)
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
    lines += servers_markdown(result)
    a32 = table.get("A", {}).get("32")
    if a32 and any(key.startswith("B:") for key in order):
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


def servers_markdown(result: dict[str, Any]) -> list[str]:
    """A and D under each server (``--servers``), and the ratios between them; nothing when
    only uvicorn ran."""
    comparison = result.get("servers") or {}
    if not comparison:
        return []
    table = result["medians"]
    cs = result["config"]["concurrency"]
    lines = [
        "",
        "## Servers: A and D under " + " and ".join(comparison["servers"]),
        "",
        "| scenario | server | c | CPU us/req | rps | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for app, keys in comparison["keys"].items():
        for server, key in keys.items():
            for c in cs:
                m = table.get(key, {}).get(str(c))
                if m is None:
                    continue
                lines.append(
                    f"| {app} | {server} | {c} | {m.get('cpu_us_per_request', 0):.0f} | "
                    f"{m['rps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.1f} | "
                    f"{m.get('errors', 0):.0f} |"
                )
    lines += [
        "",
        "Ratios of medians (the range over the repetitions, each pairing two cells of one "
        "repetition, in brackets):",
        "",
    ]
    lines += ratio_table(comparison["ratios"], cs)
    return lines


def _ratio_cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return ""
    if r["ratio"] is None:
        return str(r["note"])
    if "per_rep_min" in r:
        return f"{r['ratio']} ({r['per_rep_min']}-{r['per_rep_max']})"
    return f"{r['ratio']}"


def ratio_table(ratios: dict[str, dict[str, Any]], cs: list[int]) -> list[str]:
    """A markdown table of ratios by concurrency: the median's ratio and, where there is one, the
    range over the repetitions in brackets."""
    lines = [
        "| ratio | " + " | ".join(f"c={c}" for c in cs) + " |",
        "|---|" + "---:|" * len(cs),
    ]
    for name, per_c in ratios.items():
        cells = [_ratio_cell(per_c.get(str(c))) for c in cs]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


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


def write_cells(cells: list[dict[str, Any]], results: Path) -> None:
    """The load runs alone, as soon as they end: a failure in a later step must not lose them."""
    (results / "cells.json").write_text(json.dumps(cells, indent=2) + "\n")


def write_results(result: dict[str, Any], results: Path) -> None:
    """results.json, results.md and results.png."""
    (results / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (results / "results.md").write_text(markdown(result))
    chart(result, results / "results.png")
