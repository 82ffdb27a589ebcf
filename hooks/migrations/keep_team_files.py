"""Copier migration without a version: runs after the merge of every `copier update` (needs
--trust), answer changes included (`copier update --data include_example_client=false`).

The team's files are the ones the service's ownership map (``.template-ownership.yml``) lists as
``team_owned`` before the update, and the team's part of ``.env.example`` (below its "Your
service's settings" line). No update may change them, yet Copier's ``_skip_if_exists`` only
keeps an existing file from being overwritten:

- a team-owned file the team deleted (the example client it does not want) is rendered again;
- an answer change renders another version of a team-owned file, and Copier three-way merges
  that change into the team's edited copy (conflict markers in ``settings.py``, ``service.py``),
  or deletes the copy when the team never edited it (``users.py``, whose import ``service.py``
  still has);
- the template's changes to the team's part of ``.env.example`` are merged like the rest.

So, after Copier's merge, this puts each back as it was before the update: a team-owned file
gets its content (and its index entry, so an unmerged one is no longer unmerged), a deleted one
is deleted again, and ``.env.example`` gets back the team's part below its line, with the
platform's part as the update left it. "Before the update" is the index as Copier found it
(the service's last commit, plus what a migration staged before the merge, such as 0.1.0's
``git mv`` of the runbook); for a file Copier left unmerged, its stage 2 ("before updating").

Argument: the template checkout (``_copier_conf.src_path``), for the ownership map's glob
matcher (the render's ``tools/ownership.py``, through ``fleet/ownership.py``). It runs in the
project's root, never commits, and never touches the network. A service without an ownership
map (rendered before 0.2.0) has nothing for it to do: the 0.2.0 migration handles its seams.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

MAP_FILE = ".template-ownership.yml"
ENV_EXAMPLE = ".env.example"
# The line of .env.example below which the settings are the team's (every release since 0.2.0).
TEAM_PART = "# ---- Your service's settings"
CONFLICT_STARTS = (b"<<<<<<< ", b"=======", b">>>>>>> ")


@dataclass(frozen=True)
class Entry:
    """A path's index entry before the update: its mode and blob."""

    mode: str
    blob: str

    def content(self) -> bytes:
        return _git("cat-file", "blob", self.blob).stdout


def _git(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(["git", *args], input=stdin, capture_output=True, check=False)
    if done.returncode != 0:
        msg = f"git {' '.join(args)} failed: {done.stderr.decode(errors='replace')}"
        raise RuntimeError(msg)
    return done


def before_update() -> dict[str, Entry]:
    """Every path's entry in the index as Copier found it: stage 0, or for a path Copier left
    unmerged its stage 2 ("before updating"). Copier's merge writes only the working tree and
    the stages of the paths it leaves unmerged."""
    entries: dict[str, Entry] = {}
    unmerged: dict[str, Entry] = {}
    for line in _git("ls-files", "--stage", "-z").stdout.decode().split("\0"):
        if not line:
            continue
        meta, path = line.split("\t", 1)
        mode, blob, stage = meta.split()
        if stage == "0":
            entries[path] = Entry(mode, blob)
        elif stage == "2":
            unmerged[path] = Entry(mode, blob)
    return {**unmerged, **entries}


def _unmerged(path: str) -> bool:
    stages = _git("ls-files", "--stage", "--", path).stdout.decode().splitlines()
    return any(line.split("\t", 1)[0].split()[2] != "0" for line in stages)


def _reset_entry(path: str, entry: Entry) -> None:
    """Make ``entry`` the path's only index entry (stage 0): resolved, and unchanged since the
    last commit as far as the index goes, like every file Copier merged cleanly."""
    records = f"0 {'0' * 40}\t{path}\n{entry.mode} {entry.blob} 0\t{path}\n"
    _git("update-index", "--index-info", stdin=records.encode())


def team_owned(before: dict[str, Entry], src: str) -> tuple[list[str], list[str]]:
    """The team-owned paths of the ownership map the service had before the update: those that
    existed, and the ones the map names (no glob) that did not, which the team deleted."""
    sys.path.insert(0, src)
    from fleet.ownership import globmatch, parse  # the template's own matcher

    recorded = before.get(MAP_FILE)
    if recorded is None:
        return [], []
    patterns = parse(recorded.content().decode()).team_owned
    existing = sorted(path for path in before if any(globmatch(path, p) for p in patterns))
    literal = {p for p in patterns if not any(char in p for char in "*?[")}
    deleted = sorted(literal - set(before))
    return existing, deleted


def keep_file(path: str, entry: Entry) -> str | None:
    """Put ``path`` back as it was; say what the update had done to it (None: nothing)."""
    target = Path(path)
    content = entry.content()
    if not target.is_file():
        done = "deleted it"
    elif _unmerged(path):
        done = "merged the template's change into it, with conflicts"
    elif target.read_bytes() != content:
        done = "merged the template's change into it"
    else:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    target.chmod(0o755 if entry.mode == "100755" else 0o644)
    _reset_entry(path, entry)
    return done


def _split(text: bytes) -> tuple[bytes, bytes] | None:
    """``text`` cut after its team-part line: (the platform's part with the line, the team's
    part), or None when the line is not there exactly once."""
    lines = text.splitlines(keepends=True)
    found = [i for i, line in enumerate(lines) if line.startswith(TEAM_PART.encode())]
    if len(found) != 1:
        return None
    cut = found[0] + 1
    return b"".join(lines[:cut]), b"".join(lines[cut:])


def _has_markers(text: bytes) -> bool:
    return any(line.startswith(CONFLICT_STARTS) for line in text.splitlines())


def keep_env_part(entry: Entry) -> bool:
    """Put the team's part of .env.example back as it was, keeping the platform's part as the
    update merged it; True when the update had changed the team's part."""
    target = Path(ENV_EXAMPLE)
    old = _split(entry.content())
    new = _split(target.read_bytes()) if target.is_file() else None
    if old is None or new is None or new[1] == old[1]:
        return False
    platform, _ = new
    if _has_markers(platform) and platform.count(b"<<<<<<< ") != platform.count(b">>>>>>> "):
        return False  # a conflict spans the line: leave it to the owner, as Copier wrote it
    target.write_bytes(platform + old[1])
    if _unmerged(ENV_EXAMPLE) and not _has_markers(platform):
        _reset_entry(ENV_EXAMPLE, entry)
    return True


def main() -> int:
    (src,) = sys.argv[1:2]
    before = before_update()
    try:
        existing, deleted = team_owned(before, src)
    except ValueError as error:
        print(
            f"keep_team_files: {MAP_FILE} as committed cannot be read ({error}); the team's "
            "files were not checked: compare them with `git diff HEAD` before committing",
            file=sys.stderr,
        )
        return 1
    for path in existing:
        done = keep_file(path, before[path])
        if done:
            print(f"team-owned {path}: kept as it was (the update {done})")
    for path in deleted:
        if Path(path).is_file():
            Path(path).unlink()
            print(f"team-owned {path}: kept deleted (the update rendered it again)")
    if ENV_EXAMPLE in before and keep_env_part(before[ENV_EXAMPLE]):
        print(f"{ENV_EXAMPLE}: your part, below its '{TEAM_PART}' line, kept as it was")
    return 0


if __name__ == "__main__":
    sys.exit(main())
