"""What the template's migration scripts share: git in the project, the service's committed
files and answers, a render of another template version, and a three-way merge of one file.

Migrations run as scripts (``python hooks/migrations/<name>.py``), so this module is found
beside them. Nothing here commits or touches the network: renders use the template checkout
Copier already made.
"""

from __future__ import annotations

import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import copier
import yaml

ANSWERS = Path(".copier-answers.yml")
# Copier's own labels for the sides of an inline conflict.
LABELS = ["-L", "before updating", "-L", "last update", "-L", "after updating"]


def git(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], input=stdin, capture_output=True, check=False)


def committed(path: str) -> bytes | None:
    """The service's version of ``path`` before the update (its last commit), if it had one."""
    shown = git("show", f"HEAD:{path}")
    return shown.stdout if shown.returncode == 0 else None


def answers() -> dict[str, Any]:
    """The service's answers, without Copier's own (``_commit``, ``_src_path``)."""
    recorded: dict[str, Any] = yaml.safe_load(ANSWERS.read_text())
    return {k: v for k, v in recorded.items() if not k.startswith("_")}


def render(src: str, ref: str, data: dict[str, Any], into: Path) -> Path:
    """Render the template at ``ref`` with ``data`` into ``into``, tasks skipped, quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        copier.run_copy(
            src,
            str(into),
            data=data,
            vcs_ref=ref,
            defaults=True,
            overwrite=True,
            unsafe=True,
            skip_tasks=True,
            quiet=True,
        )
    return into


def merge_file(ours: bytes, base: bytes, theirs: bytes) -> tuple[bytes, bool]:
    """``git merge-file`` of ``ours`` and ``theirs`` over ``base``: the result, with Copier's
    conflict markers where both sides changed the same lines, and whether it has any."""
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
        msg = f"git merge-file failed: {merged.stderr.decode(errors='replace')}"
        raise RuntimeError(msg)
    return merged.stdout, merged.returncode != 0


def reset_to_committed(path: str) -> None:
    """Make the last commit's entry the only index entry of ``path``: resolved if Copier left
    it unmerged, and unstaged like every other change of an update."""
    listed = git("ls-tree", "HEAD", "--", path).stdout.decode().split()
    if not listed:
        return
    mode, _, blob = listed[:3]
    records = f"0 {'0' * 40}\t{path}\n{mode} {blob} 0\t{path}\n"
    git("update-index", "--index-info", stdin=records.encode())
