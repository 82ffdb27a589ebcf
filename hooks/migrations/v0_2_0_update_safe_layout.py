"""Copier migration for 0.2.0, run after the update merges (needs --trust).

0.2.0 splits the service into the platform's code (``src/<pkg>/core/``, ``tests/core/``) and
the team's seams (``settings.py``, ``service.py``, the example client and its tests), which
Copier renders once and then never touches (``_skip_if_exists``). Copier alone would get both
halves of that move wrong for a service rendered from 0.1.0:

- a platform module that moved (``src/<pkg>/retry.py`` to ``src/<pkg>/core/retry.py``) is
  deleted at its old path with any local edits, and rendered fresh at the new one;
- a file that became a team seam (``settings.py``, ``users.py``) already exists, so Copier
  skips it: it keeps its 0.1.0 content, which imports modules that moved.

So, after Copier's merge, each such file gets a real three-way merge, as Copier does for any
other file: base = what 0.1.0 rendered, ours = the service's committed version (``HEAD``),
theirs = what 0.2.0 renders. A file the team never edited simply becomes the 0.2.0 one. Where
both sides changed the same lines, the file gets Copier's inline conflict markers and is marked
unmerged in the index (``git status`` shows it); docs/upgrading.md says how to resolve each.

Arguments: the template checkout (``_copier_conf.src_path``), the commit updated from and the
commit updated to. It runs in the project's root, never commits, and never touches the network
(the template is the local checkout Copier already made).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import copier
import yaml

ANSWERS = Path(".copier-answers.yml")
OWNERSHIP = Path(".template-ownership.yml")
LABELS = ["-L", "before updating", "-L", "last update", "-L", "after updating"]
# Files that became team-owned after 0.2.0: the migration of the release that made them so
# carries them, not this one.
LATER_SEAMS = {"README.md"}


def _git(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], input=stdin, capture_output=True, check=False)


def _committed(path: str) -> bytes | None:
    """The service's version of ``path`` before the update (its last commit), if it had one."""
    shown = _git("show", f"HEAD:{path}")
    return shown.stdout if shown.returncode == 0 else None


def _render(src: str, ref: str, answers: dict[str, Any], into: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        copier.run_copy(
            src,
            str(into),
            data=answers,
            vcs_ref=ref,
            defaults=True,
            overwrite=True,
            unsafe=True,
            skip_tasks=True,
            quiet=True,
        )
    return into


def _files(root: Path) -> set[str]:
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def _moved_to(path: str, new_files: set[str]) -> str | None:
    """Where 0.2.0 renders a file that 0.1.0 rendered at ``path``: the same name in a ``core/``
    folder beside it (``src/<pkg>/retry.py`` -> ``src/<pkg>/core/retry.py``)."""
    parent, _, name = path.rpartition("/")
    target = f"{parent}/core/{name}" if parent else f"core/{name}"
    return target if target in new_files else None


def _merge(target: str, ours: bytes, base: bytes, theirs: bytes) -> bool:
    """Write the three-way merge of ``ours`` and ``theirs`` over ``base`` into ``target`` and
    stage it, as unmerged when it conflicts. True when it conflicts."""
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for name, content in (("ours", ours), ("base", base), ("theirs", theirs)):
            file = Path(tmp, name)
            file.write_bytes(content)
            files.append(str(file))
        merged = subprocess.run(
            ["git", "merge-file", "-p", *LABELS, *files], capture_output=True, check=False
        )
    if merged.returncode < 0 or merged.returncode > 127:
        msg = f"git merge-file failed on {target}: {merged.stderr.decode(errors='replace')}"
        raise RuntimeError(msg)
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_bytes(merged.stdout)
    if merged.returncode == 0:
        _git("add", "--", target)
        return False
    # Record the conflict in the index as Copier does: stage 1 = base, 2 = ours, 3 = theirs.
    entries = [f"0 {'0' * 40}\t{target}"]
    for stage, content in ((1, base), (2, ours), (3, theirs)):
        blob = _git("hash-object", "-w", "--stdin", stdin=content).stdout.decode().strip()
        entries.append(f"100644 {blob} {stage}\t{target}")
    _git("update-index", "--index-info", stdin="\n".join(entries).encode())
    return True


def migrate(src: str, old_ref: str, new_ref: str) -> list[str]:
    """Bring moved modules and new team seams up to 0.2.0 with the service's edits; return the
    files left with conflicts."""
    recorded = yaml.safe_load(ANSWERS.read_text())
    answers = {k: v for k, v in recorded.items() if not k.startswith("_")}
    conflicts = []
    with tempfile.TemporaryDirectory(prefix="migration-0.2.0-") as tmp:
        old = _render(src, old_ref, answers, Path(tmp, "old"))
        new = _render(src, new_ref, answers, Path(tmp, "new"))
        old_files, new_files = _files(old), _files(new)
        team_owned = yaml.safe_load((new / OWNERSHIP).read_text())["team_owned"]
        pairs = [(path, _moved_to(path, new_files)) for path in sorted(old_files - new_files)]
        # README.md became the team's in 0.3.0, whose own migration carries it.
        seams = [path for path in team_owned if path not in LATER_SEAMS]
        pairs += [(path, path) for path in sorted(old_files & new_files) if path in seams]
        for before, after in pairs:
            ours = _committed(before)
            if after is None or ours is None:
                continue
            base = (old / before).read_bytes()
            theirs = (new / after).read_bytes()
            message = _carry(before, after, ours, base, theirs, conflicts)
            if message:
                print(
                    f"migration 0.2.0: {before} -> {after}: {message}"
                    if before != after
                    else f"migration 0.2.0: {after}: {message}"
                )
    return conflicts


def _carry(
    before: str, after: str, ours: bytes, base: bytes, theirs: bytes, conflicts: list[str]
) -> str | None:
    """Bring one file to 0.2.0 with the service's edits; say what happened to it, or None when
    nothing did (so the update's output names only the files the migration changed)."""
    if ours == base:
        if before != after or ours == theirs:
            # Unedited: a moved module is already rendered fresh at its new path.
            return None
        # An unedited seam that Copier skipped (it exists): it becomes the 0.2.0 one.
        Path(after).write_bytes(theirs)
        _git("add", "--", after)
        return "you had not edited it: now the 0.2.0 version"
    if theirs == base:
        # The template did not change this file: nothing to merge, the service's version is it.
        if before == after:
            return None
        Path(after).parent.mkdir(parents=True, exist_ok=True)
        Path(after).write_bytes(ours)
        _git("add", "--", after)
        return "moved, with your edits"
    if _merge(after, ours, base, theirs):
        conflicts.append(after)
        return "merged your edits, with conflicts"
    return "merged your edits"


def main() -> int:
    src, old_ref, new_ref = sys.argv[1:4]
    conflicts = migrate(src, old_ref, new_ref)
    for path in conflicts:
        print(
            f"migration 0.2.0: {path}: conflicts with the new layout; resolve it as "
            "docs/upgrading.md ('0.1.0 to 0.2.0') says",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
