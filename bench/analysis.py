"""What the load runs add up to: medians per scenario and concurrency, the ratios of A to the
hand-written gateways with their spread over repetitions, and the verdict on each target."""

from __future__ import annotations

import statistics
from typing import Any

# (ratio, concurrency, target, stretch target): throughput ratios are at least the target,
# p99 ratios at most. p99 is judged at c=1, the latency a caller sees: under wrk's closed loop at
# c=32 and beyond, latency is the concurrency over the throughput (Little's law), so a p99 target
# there only restates the throughput one.
TARGETS: tuple[tuple[str, int, float, float | None], ...] = (
    ("A/D", 32, 0.6, None),
    ("A/C", 32, 2.0, None),
    ("p99 A/D", 1, 1.3, None),
)


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
    """A over C, D, E, F and G per concurrency: the ratio of medians, and its spread over the
    repetitions (each repetition's cells ran minutes apart at most)."""
    out: dict[str, dict[str, Any]] = {}
    reps = sorted({cell["rep"] for cell in cells})
    by = {(cell["scenario"], cell["c"], cell["rep"]): cell for cell in cells}
    for other in ("C", "D", "E", "F", "G"):
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


def _paired(
    by: dict[tuple[str, int, int], dict[str, Any]],
    reps: list[int],
    top: str,
    bottom: str,
    c: int,
    metric: str,
) -> dict[str, Any] | None:
    """``top`` over ``bottom`` in ``metric`` at ``c``: the ratio of medians, and its range over
    the repetitions (each pairs two cells of one repetition)."""
    pairs = [
        (by[(top, c, rep)][metric], by[(bottom, c, rep)][metric])
        for rep in reps
        if (top, c, rep) in by and (bottom, c, rep) in by
    ]
    pairs = [(t, b) for t, b in pairs if t is not None and b]
    if not pairs:
        return None
    per_rep = [t / b for t, b in pairs]
    median_bottom = statistics.median(b for _, b in pairs)
    return {
        "ratio": round(statistics.median(t for t, _ in pairs) / median_bottom, 2),
        "per_rep_min": round(min(per_rep), 2),
        "per_rep_max": round(max(per_rep), 2),
    }


def server_comparison(cells: list[dict[str, Any]], servers: tuple[str, ...]) -> dict[str, Any]:
    """A and D under each server of ``servers`` (uvicorn's keys are ``A`` and ``D``, another
    server's ``A:<server>``): A/D under each, in throughput and in CPU per request, and each
    other server against uvicorn for each app. Empty when only uvicorn ran."""
    others = [s for s in servers if s != "uvicorn"]
    if not others:
        return {}
    by = {(cell["scenario"], cell["c"], cell["rep"]): cell for cell in cells}
    reps = sorted({cell["rep"] for cell in cells})
    cs = sorted({cell["c"] for cell in cells if cell["scenario"] in ("A", "D")})

    def key(app: str, server: str) -> str:
        return app if server == "uvicorn" else f"{app}:{server}"

    out: dict[str, dict[str, Any]] = {}

    def add(name: str, top: str, bottom: str, metric: str) -> None:
        for c in cs:
            entry = _paired(by, reps, top, bottom, c, metric)
            if entry is not None:
                out.setdefault(name, {})[str(c)] = entry

    for server in servers:
        add(f"A/D rps ({server})", key("A", server), key("D", server), "rps")
        add(
            f"A/D CPU per request ({server})",
            key("A", server),
            key("D", server),
            "cpu_us_per_request",
        )
    for server in others:
        for app in ("A", "D"):
            add(
                f"{app}: {server}/uvicorn CPU per request",
                key(app, server),
                app,
                "cpu_us_per_request",
            )
            add(f"{app}: {server}/uvicorn rps", key(app, server), app, "rps")
            add(f"{app}: {server}/uvicorn p99", key(app, server), app, "p99_ms")
    return {
        "servers": list(servers),
        "keys": {app: {s: key(app, s) for s in servers} for app in ("A", "D")},
        "ratios": out,
    }
