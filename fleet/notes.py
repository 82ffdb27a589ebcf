"""The pull-request body of a template update: what changed and what needs a human.

Everything in it comes from the template at the target version (CHANGELOG.md, docs/upgrading.md,
copier.yml) and from the update itself, so a reviewer needs nothing else to judge it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from fleet.template import Release, Template

_HEADING = re.compile(r"^(#{2,3}) (.+)$", re.MULTILINE)


@dataclass
class UpdateFacts:
    """What one update did, for its body."""

    src: str
    current: str
    target: str
    outcome: str
    migrations: list[dict[str, Any]] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    checks: dict[str, str] = field(default_factory=dict)  # "make lint" -> "passed"/"failed: ..."
    diffstat: str = ""
    data: dict[str, str] = field(default_factory=dict)  # answers changed with --data


def changelog_sections(text: str) -> dict[str, str]:
    """``## <version> - <date>`` sections of a changelog, by version, heading included."""
    parts = re.split(r"^(?=## )", text, flags=re.MULTILINE)
    sections = {}
    for part in parts:
        match = re.match(r"## (\S+)", part)
        if match:
            sections[match.group(1)] = part.strip()
    return sections


def attention_lines(section: str) -> list[str]:
    """Entries marked **breaking** or **migration**: what an owner must read before merging."""
    return [
        line.strip()
        for line in section.splitlines()
        if "**breaking**" in line or "**migration**" in line
    ]


def upgrade_notes(text: str, versions: list[str]) -> list[str]:
    """Sections of docs/upgrading.md whose heading names one of ``versions``."""
    found = []
    matches = list(_HEADING.finditer(text))
    for index, match in enumerate(matches):
        if any(re.search(rf"(?<![\w.]){re.escape(v)}(?![\w.])", match.group(2)) for v in versions):
            end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
            found.append(text[match.start() : end].strip())
    return found


def body(template: Template, facts: UpdateFacts, crossed: list[Release]) -> str:
    """The markdown body."""
    current, target = template.label(facts.current), template.label(facts.target)
    changelog = changelog_sections(template.file_at(facts.target, "CHANGELOG.md") or "")
    upgrading = template.file_at(facts.target, "docs/upgrading.md") or ""
    lines = [
        f"Template update: **{current} → {target}** ({len(crossed)} release(s) crossed)",
        "",
        f"Template: `{facts.src}`, from `{facts.current[:12]}` to `{facts.target[:12]}`.",
        f"Outcome: **{facts.outcome}**.",
        "",
    ]
    lines += _list(
        "Answers changed (`copier update --data`)",
        [f"`{key}={value}`" for key, value in facts.data.items()],
    )
    lines += _attention(changelog, crossed)
    lines += _list(
        "Migrations run",
        [f"{m['version'] or 'every update'}: `{m['command']}`" for m in facts.migrations],
    )
    lines += _list(
        "Conflicts (resolve the markers, then `git add`)", [f"`{path}`" for path in facts.conflicts]
    )
    lines += _list("Checks", [f"`{name}`: {result}" for name, result in facts.checks.items()])
    lines += ["## Releases crossed", ""]
    for release in reversed(crossed):
        lines += [
            _demote(changelog.get(release.tag, f"## {release.tag}\n\n(no changelog entry)")),
            "",
        ]
    notes = upgrade_notes(upgrading, [r.tag for r in crossed])
    if notes:
        lines += ["## Upgrade notes", "", *[_demote(n) for n in notes], ""]
    lines += ["## Diff stat", "", "```text", facts.diffstat.rstrip() or "(no changes)", "```", ""]
    return "\n".join(lines)


def _attention(changelog: dict[str, str], crossed: list[Release]) -> list[str]:
    entries = [
        f"{release.tag}: {line.lstrip('- ')}"
        for release in reversed(crossed)
        for line in attention_lines(changelog.get(release.tag, ""))
    ]
    return _list("Needs attention (breaking changes and migrations)", entries)


def _list(title: str, entries: list[str]) -> list[str]:
    if not entries:
        return []
    return [f"## {title}", "", *[f"- {entry}" for entry in entries], ""]


def _demote(section: str) -> str:
    """Headings one level down, so a changelog section nests under the body's own headings."""
    return re.sub(r"^(#+) ", r"\1# ", section, flags=re.MULTILINE)
