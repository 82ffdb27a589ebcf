"""One service repository, read without changing it: where its template is, which version and
answers it records, and whether it is in a state the tool may work on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from fleet.gitutil import FleetError, git, git_ok

ANSWERS_FILE = ".copier-answers.yml"


@dataclass(frozen=True)
class Service:
    path: Path
    src_path: str  # the template, as the answers file records it
    recorded: str  # `_commit` as recorded: a tag, a describe string or a hash
    answers: dict[str, Any]  # the answers without Copier's own `_` keys
    dirty: list[str]  # `git status --porcelain` lines; Copier refuses to update a dirty tree

    @property
    def name(self) -> str:
        return self.path.name


def open_service(path: Path) -> Service:
    """Read ``path`` as a service; raise FleetError saying why it cannot be one."""
    if not path.is_dir():
        raise FleetError(f"{path} is not a directory")
    if not git_ok(path, "rev-parse", "--git-dir"):
        raise FleetError(f"{path} is not a git repository")
    top = Path(git(path, "rev-parse", "--show-toplevel").strip()).resolve()
    if top != path.resolve():
        raise FleetError(f"{path} is inside the git repository {top}, not its root")
    if not git_ok(path, "rev-parse", "--verify", "--quiet", "HEAD"):
        raise FleetError(f"{path} has no commit yet")
    answers_path = path / ANSWERS_FILE
    if not answers_path.is_file():
        raise FleetError(f"{path} has no {ANSWERS_FILE}: it was not rendered by Copier")
    try:
        recorded = yaml.safe_load(answers_path.read_text()) or {}
    except yaml.YAMLError as error:
        raise FleetError(f"{ANSWERS_FILE} is not valid YAML: {error}") from None
    if not isinstance(recorded, dict) or not recorded.get("_src_path"):
        raise FleetError(f"{ANSWERS_FILE} records no template (_src_path)")
    if not recorded.get("_commit"):
        raise FleetError(f"{ANSWERS_FILE} records no template version (_commit)")
    status = git(path, "status", "--porcelain", "--untracked-files=all").splitlines()
    return Service(
        path=path,
        src_path=_src_path(path, str(recorded["_src_path"])),
        recorded=str(recorded["_commit"]),
        answers={k: v for k, v in recorded.items() if not str(k).startswith("_")},
        dirty=status,
    )


def _src_path(service: Path, src: str) -> str:
    """A relative local template path is relative to the service, as Copier reads it."""
    candidate = Path(src).expanduser()
    if not candidate.is_absolute() and "://" not in src and (service / candidate).exists():
        return str((service / candidate).resolve())
    return src


def require_clean(service: Service) -> None:
    """Refuse a dirty work tree, as Copier does, naming a few of the changed files."""
    if service.dirty:
        shown = ", ".join(line[3:] for line in service.dirty[:5])
        more = f" and {len(service.dirty) - 5} more" if len(service.dirty) > 5 else ""
        raise FleetError(
            f"the work tree has uncommitted changes ({shown}{more}); commit or stash them first"
        )


def committed_blobs(path: Path) -> dict[str, str]:
    """Every committed file at HEAD, by path, with its blob id."""
    out = git(path, "ls-tree", "-r", "-z", "HEAD")
    blobs = {}
    for entry in out.split("\0"):
        if entry:
            meta, name = entry.split("\t", 1)
            _mode, kind, blob = meta.split()
            if kind == "blob":
                blobs[name] = blob
    return blobs


def tree_id(path: Path) -> str:
    """The id of HEAD's tree: two services with the same id hold exactly the same files."""
    return git(path, "rev-parse", "HEAD^{tree}").strip()
