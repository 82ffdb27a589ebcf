"""The rendered GitHub Actions CI is hardened: zizmor (offline audits) finds nothing in any
GitHub variant, every action is pinned to a full commit SHA with its version beside it, and a
Dependabot config keeps the pins current."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import render
from tests.test_render import VARIANTS

GITHUB_VARIANTS = {
    name: answers
    for name, answers in VARIANTS.items()
    if answers.get("ci_provider", "github") == "github"
}
ZIZMOR = Path(sys.executable).with_name("zizmor")
# `uses: owner/repo@<40 hex>  # vX.Y.Z`: a SHA cannot be moved the way a tag can.
PINNED = re.compile(r"^\s*-?\s*uses: [\w.-]+/[\w./-]+@[0-9a-f]{40}  # v\d+\.\d+\.\d+$")


@pytest.mark.parametrize("answers", GITHUB_VARIANTS.values(), ids=GITHUB_VARIANTS.keys())
def test_zizmor_finds_nothing(tmp_path: Path, answers: dict[str, Any]) -> None:
    project = render(tmp_path / "service", answers)
    result = subprocess.run(
        [str(ZIZMOR), "--offline", "--format", "plain", ".github"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout, result.stdout
    for workflow in (project / ".github/workflows").glob("*.yml"):
        text = workflow.read_text()
        uses = [line for line in text.splitlines() if "uses:" in line]
        assert uses, workflow
        assert [line for line in uses if not PINNED.match(line)] == [], workflow
        # A deliberate exception is suppressed inline and says why.
        for ignore in re.findall(r"# zizmor: ignore\[[\w,-]+\](.*)", text):
            assert ignore.strip(" -:"), f"{workflow.name}: a zizmor ignore without its reason"


def test_dependabot_keeps_the_action_pins_current_on_github_only(tmp_path: Path) -> None:
    github = render(tmp_path / "github")
    config = (github / ".github/dependabot.yml").read_text()
    assert re.search(r"package-ecosystem: github-actions\n\s+directory: /\n", config), config
    for provider in ("gitlab", "none"):
        other = render(tmp_path / provider, {"ci_provider": provider})
        assert not (other / ".github").exists()
