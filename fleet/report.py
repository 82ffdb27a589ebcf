"""`fleet report`: one self-contained HTML page about the fleet (inline CSS and SVG, no external
assets, so it can be mailed, attached to a CI run or opened offline)."""

from __future__ import annotations

from collections import Counter
from html import escape
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

_CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#1d2430;
padding:0 1rem}
h1{font-size:1.6rem;margin:0 0 .3rem}h2{font-size:1.15rem;margin:2rem 0 .6rem}
.meta{color:#5b6473}.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.card{border:1px solid #d8dde6;border-radius:8px;padding:.6rem 1rem;min-width:9rem}
.card b{display:block;font-size:1.5rem}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .6rem;
border-bottom:1px solid #e5e8ee;vertical-align:top}th{background:#f3f5f8}
td.num{text-align:right}.error{color:#a3261b}.ok{color:#1d7a36}.warn{color:#9a6300}
code{font-size:.92em}svg text{font:12px system-ui,sans-serif;fill:#1d2430}
"""


def _sort_key(label: str) -> tuple[int, Any]:
    try:
        return (0, Version(label))
    except InvalidVersion:
        return (1, label)


def version_chart(statuses: list[dict[str, Any]]) -> str:
    """A bar chart (inline SVG) of how many services are on each template version."""
    counts = Counter(s["template_version"] or "unreadable" for s in statuses)
    labels = sorted(counts, key=_sort_key)
    latest = next((s["latest"] for s in statuses if s["latest"]), None)
    width, bar, gap, top, left = 640, 28, 10, 10, 130
    height = top * 2 + len(labels) * (bar + gap)
    most = max(counts.values(), default=1)
    parts = [
        f'<svg id="version-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" role="img" aria-label="Services per template version">'
    ]
    for index, label in enumerate(labels):
        y = top + index * (bar + gap)
        length = max(2, round((width - left - 60) * counts[label] / most))
        colour = "#2f7d4f" if label == latest else "#c7772a" if label != "unreadable" else "#a3261b"
        parts += [
            f'<text x="{left - 8}" y="{y + bar * 0.65:.0f}" text-anchor="end">'
            f"{escape(label)}</text>",
            f'<rect class="bar" x="{left}" y="{y}" width="{length}" height="{bar}" rx="3" '
            f'fill="{colour}"><title>{escape(label)}: {counts[label]}</title></rect>',
            f'<text x="{left + length + 6}" y="{y + bar * 0.65:.0f}">{counts[label]}</text>',
        ]
    parts.append("</svg>")
    return "".join(parts)


def hotspots(
    statuses: list[dict[str, Any]], plans: list[dict[str, Any]]
) -> list[tuple[str, int, int]]:
    """(file, services drifting in it, services conflicting in it), most affected first: the
    template files teams keep changing, which the platform team should make configurable."""
    drifted: Counter[str] = Counter()
    conflicted: Counter[str] = Counter()
    for status in statuses:
        drifted.update({d["path"] for d in status.get("drift") or []})
    for plan in plans:
        conflicted.update(set(plan.get("conflicts") or []))
    files = set(drifted) | set(conflicted)
    ranked = sorted(files, key=lambda f: (-(drifted[f] + conflicted[f]), f))
    return [(f, drifted[f], conflicted[f]) for f in ranked]


def render_html(
    statuses: list[dict[str, Any]], plans: list[dict[str, Any]], target: str | None, generated: str
) -> str:
    """The whole page."""
    plan_by_path = {p["path"]: p for p in plans}
    readable = [s for s in statuses if s["template_version"]]
    behind = [s for s in readable if s["behind"]]
    drifting = [s for s in statuses if s["drift"]]
    latest = next((s["latest"] for s in statuses if s["latest"]), "none")
    cards = [
        ("services", len(statuses)),
        ("latest release", latest),
        ("behind", len(behind)),
        ("drifting", len(drifting)),
        ("unreadable", sum(1 for s in statuses if s["error"] and not s["template_version"])),
    ]
    body = [
        "<h1>Service fleet: template report</h1>",
        f'<p class="meta">Generated {escape(generated)}. Conflicts are predicted by '
        f"<code>fleet plan --to {escape(target or 'n/a')}</code>.</p>"
        if target
        else f'<p class="meta">Generated {escape(generated)}. Conflicts not planned.</p>',
        '<div class="cards">'
        + "".join(f"<div class=card><b>{escape(str(v))}</b>{k}</div>" for k, v in cards)
        + "</div>",
        "<h2>Template versions</h2>",
        version_chart(statuses),
        "<h2>Files that drift or conflict most</h2>",
        _hotspot_table(hotspots(statuses, plans)),
        "<h2>Services</h2>",
        _service_table(statuses, plan_by_path),
    ]
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        "<title>Service fleet report</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )


def _hotspot_table(rows: list[tuple[str, int, int]]) -> str:
    if not rows:
        return "<p id=hotspots>No template-owned file drifts and no update conflicts.</p>"
    cells = "".join(
        f"<tr><td><code>{escape(f)}</code></td><td class=num>{d}</td><td class=num>{c}</td></tr>"
        for f, d, c in rows[:25]
    )
    return (
        "<table id=hotspots><thead><tr><th>file</th><th>services drifting</th>"
        f"<th>services conflicting</th></tr></thead><tbody>{cells}</tbody></table>"
    )


def _service_table(statuses: list[dict[str, Any]], plans: dict[str, dict[str, Any]]) -> str:
    rows = []
    for s in sorted(statuses, key=lambda s: (-(s["days_behind"] or 0), s["path"])):
        plan = plans.get(s["path"], {})
        drift = s["drift"]
        drift_cell = (
            "unknown (no ownership map)"
            if drift is None and s["template_version"] and not s["error"]
            else ""
            if drift is None
            else "<span class=ok>none</span>"
            if not drift
            else "<br>".join(
                f"{escape(d['state'])}: <code>{escape(d['path'])}</code>" for d in drift
            )
        )
        outcome = plan.get("outcome", "")
        if plan.get("conflicts"):
            outcome += ": " + ", ".join(escape(c) for c in plan["conflicts"])
        rows.append(
            f"<tr><td>{escape(Path(s['path']).name)}</td>"
            f"<td>{escape(s['template_version'] or '')}</td>"
            f"<td class=num>{'' if s['behind'] is None else s['behind']}</td>"
            f"<td class=num>{'' if s['days_behind'] is None else s['days_behind']}</td>"
            f"<td>{drift_cell}</td><td>{outcome}</td>"
            f"<td class=error>{escape(s['error'] or '')}</td></tr>"
        )
    return (
        "<table id=services><thead><tr><th>service</th><th>version</th><th>releases behind</th>"
        "<th>days behind</th><th>drift</th><th>planned update</th><th>error</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
