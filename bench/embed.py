"""Copy the tables of the latest results into docs/performance.md, between its markers.

    .venv/bin/python -m bench.embed

``<!-- results:NAME -->`` ... ``<!-- /results -->`` in the page is replaced with the matching
part of bench/results/results.md (or changes.md). The prose around the tables is written by
hand: after a run, read it again against the new numbers.
"""

from __future__ import annotations

import re

from bench import RESULTS
from harness.support import REPO_ROOT

DOC = REPO_ROOT / "docs" / "performance.md"


def sections(markdown: str) -> dict[str, str]:
    """Body of each ``## `` section, by heading."""
    found: dict[str, str] = {}
    for block in re.split(r"^## ", markdown, flags=re.MULTILINE)[1:]:
        heading, _, body = block.partition("\n")
        found[heading.strip()] = body.strip()
    return found


def pick(found: dict[str, str], prefix: str) -> str:
    for heading, body in found.items():
        if heading.startswith(prefix):
            return body
    raise SystemExit(f"results.md has no section starting with {prefix!r}")


def table_only(body: str) -> str:
    """The section's table, or its text where the run has no table (a profile skipped)."""
    table = "\n".join(line for line in body.splitlines() if line.startswith("|"))
    return table or body.split("\n\n")[0]


def main() -> None:
    results = sections((RESULTS / "results.md").read_text())
    first = (RESULTS / "results.md").read_text().split("\n\n")[1]
    changes = (RESULTS / "changes.md").read_text().split("\n\n", 2)[2].strip()
    parts = {
        "throughput": f"{first}\n\n{pick(results, 'Throughput')}\n\n"
        f"A against the alternatives (ratio of median throughput; the range over the "
        f"repetitions in brackets):\n\n{pick(results, 'A against')}",
        "scaling": pick(results, "How CPU per request"),
        "targets": pick(results, "Targets"),
        "options": pick(results, "What each option costs"),
        "micro": pick(results, "CPU per request by layer"),
        "changes": changes,
        "fds": pick(results, "File descriptors"),
        "profile": table_only(pick(results, "Where A's CPU goes")),
    }
    text = DOC.read_text()
    for name, body in parts.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n).*?(<!-- /results -->)", re.DOTALL)
        if not pattern.search(text):
            raise SystemExit(f"{DOC} has no results:{name} marker")
        text = pattern.sub(lambda m, body=body: f"{m.group(1)}{body}\n{m.group(2)}", text)
    DOC.write_text(text)
    print(f"updated {DOC.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
