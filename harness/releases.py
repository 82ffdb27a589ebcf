"""A synthetic next release of the template, for the tests that update a customized service.

``NEXT`` is built from the working tree: it changes every template-owned file (a marker line in
each) and the template's parts of the shared files (a platform setting in .env.example, a
platform dependency in pyproject.toml). A service rendered from the working tree (``CURRENT``)
is updated to it; the session fixture ``releases`` (tests/conftest.py) builds the repository once
per test worker.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from harness.support import (
    commit_all,
    conflict_markers,
    copy_working_tree,
    init_repo,
    project_files,
    rejected_hunks,
    render,
    unmerged_paths,
)

PACKAGE = "my_service"
CURRENT = "1.0.0"
NEXT = "1.1.0"


def ownership_tool(project: Path) -> Any:
    """The render's tools/ownership.py, imported (it needs only PyYAML and Copier)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ownership", project / "tools/ownership.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ownership"] = module
    spec.loader.exec_module(module)
    return module


def marker_line(path: str) -> str:
    if path.endswith(".md"):
        return f"\n<!-- next release: {path} -->\n"
    if path.endswith(".py"):  # two blank lines, as ruff format wants before a top-level comment
        return f"\n\n# next release: {path}\n"
    return f"# next release: {path}\n"


def rendered_path(source: str) -> str:
    """Where the default answers render the template source file ``source``."""
    path = source.removeprefix("template/").replace("{{package_name}}", PACKAGE)
    path = re.sub(r"\{% if [^%]*%\}(.*?)\{% endif %\}", r"\1", path)
    return path.removesuffix(".jinja")


def make_next_release(tree: Path, ownership: dict[str, list[str]], tool: Any) -> list[str]:
    """Change every template-owned file of the template in ``tree`` and the template's parts of
    the shared ones; return the rendered paths changed."""
    changed = []
    for source in sorted((tree / "template").rglob("*")):
        relative = source.relative_to(tree).as_posix()
        rendered = rendered_path(relative)
        if not source.is_file() or rendered == ".copier-answers.yml":
            continue
        if tool.owners(rendered, ownership) != ["template_owned"]:
            continue
        text = source.read_text()
        marker = marker_line(rendered)
        if not text.strip():  # an empty file: no blank lines before its only line
            text, marker = "", marker.lstrip("\n")
        source.write_text(text + ("" if text.endswith("\n") or not text else "\n") + marker)
        changed.append(rendered)
    env = tree / "template/.env.example.jinja"
    env.write_text(
        env.read_text().replace(
            "# (End of the platform's settings.)\n",
            "# A platform setting the next release adds\n# (End of the platform's settings.)\n",
        )
    )
    pyproject = tree / "template/pyproject.toml.jinja"
    pyproject.write_text(
        pyproject.read_text().replace('"uvicorn[standard]>=0.50",', '"uvicorn[standard]>=0.50.0",')
    )
    return changed


def build_releases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A template repository with CURRENT (the working tree) and NEXT tagged, and the rendered
    paths NEXT changes."""
    tree = copy_working_tree(tmp_path_factory.mktemp("snapshot") / "tree")
    probe = render(tmp_path_factory.mktemp("probe") / "svc", src=tree, vcs_ref=None)
    tool = ownership_tool(probe)
    repo = init_repo(tmp_path_factory.mktemp("template") / "repo")
    shutil.copytree(tree, repo, dirs_exist_ok=True)
    commit_all(repo, f"Release {CURRENT}", tag=CURRENT)
    changed = make_next_release(repo, tool.load_map(probe), tool)
    commit_all(repo, f"Release {NEXT}", tag=NEXT)
    return repo, changed


def check_update(project: Path, before: dict[str, bytes], changed: list[str]) -> dict[str, bytes]:
    """Assert that an update to NEXT left no conflict, brought every template change, and kept
    every team-owned file as the team left it (deleted ones stay deleted); return the files."""
    assert (conflict_markers(project), rejected_hunks(project)) == ([], [])
    assert unmerged_paths(project) == []
    after = project_files(project)
    missing = [p for p in changed if marker_line(p).strip() not in after.get(p, b"").decode()]
    assert changed and missing == []
    tool = ownership_tool(project)
    ownership = tool.load_map(project)
    team_files = [p for p in before if tool.owners(p, ownership) in (["team_owned"], [])]
    assert [p for p in team_files if after.get(p) != before[p]] == []
    came_back = [
        p for p in after if p not in before and tool.owners(p, ownership) == ["team_owned"]
    ]
    assert came_back == []
    return after
