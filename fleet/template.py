"""The template repository: its releases, and renders of it cached by (commit, answers).

Every question `status` asks is "what would this template version render with these answers?".
Services that share a version and answers share the answer, so a render is made once per
distinct pair per run (in memory), and once per pair ever with a disk cache: a render of a fixed
commit with fixed answers never changes, so the cache needs no invalidation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from packaging.version import InvalidVersion, Version

from fleet.gitutil import FleetError, git, git_ok

# Directories a render never contains but a cache or a task might leave.
_SKIPPED_PARTS = {".git"}


@dataclass(frozen=True)
class Release:
    """A release tag: a PEP 440 version that is not a pre-release."""

    version: Version
    tag: str
    commit: str
    date: datetime


def answers_key(answers: dict[str, Any]) -> str:
    """A stable hash of a service's answers (the disk cache key's second half)."""
    canonical = json.dumps(answers, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def blob_id(data: bytes) -> str:
    """The git blob id of ``data``: compared with `git ls-tree`, no service file is read."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


class Template:
    """One template repository, as a local git repository the tool can query and render from.

    A local source is used in place; any other source is cloned once per run into ``workdir``.
    """

    def __init__(self, src: str, workdir: Path, cache_dir: Path | None = None) -> None:
        self.src = src
        self.cache_dir = cache_dir
        self.local = self._local_copy(src, workdir)
        self.renders: dict[tuple[str, str], dict[str, bytes]] = {}
        self.render_count = 0  # renders actually made by Copier in this run
        self._releases: list[Release] | None = None
        self._merged: dict[str, set[str]] = {}

    @staticmethod
    def _local_copy(src: str, workdir: Path) -> Path:
        path = Path(src).expanduser()
        if path.is_dir() and git_ok(path, "rev-parse", "--git-dir"):
            return path.resolve()
        target = Path(tempfile.mkdtemp(prefix="template-", dir=workdir))
        try:
            git(workdir, "clone", "--quiet", src, str(target))
        except FleetError as error:
            raise FleetError(f"cannot read the template {src}: {error}") from None
        return target

    # --- Versions ---------------------------------------------------------------------------

    @property
    def releases(self) -> list[Release]:
        """Release tags, oldest first. Tags that are not PEP 440, and pre-releases, are not
        releases (Copier and Renovate ignore them too)."""
        if self._releases is None:
            out = git(
                self.local,
                "for-each-ref",
                "--format=%(refname:short)%09%(creatordate:unix)",
                "refs/tags",
            )
            found = []
            for line in out.splitlines():
                tag, stamp = line.split("\t")
                try:
                    version = Version(tag)
                except InvalidVersion:
                    continue
                if version.is_prerelease:
                    continue
                commit = git(self.local, "rev-parse", f"{tag}^{{commit}}").strip()
                date = datetime.fromtimestamp(int(stamp), tz=UTC)
                found.append(Release(version, tag, commit, date))
            self._releases = sorted(found, key=lambda r: r.version)
        return self._releases

    @property
    def latest(self) -> Release | None:
        return self.releases[-1] if self.releases else None

    def resolve(self, ref: str) -> str:
        """The full commit hash of ``ref`` (a tag, branch, hash or Copier's describe string)."""
        out = git(self.local, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        if not out.strip():
            match = re.fullmatch(r".+-\d+-g([0-9a-f]{4,40})", ref)
            if match:
                return self.resolve(match.group(1))
            raise FleetError(f"the template {self.src} has no ref {ref!r}")
        return out.strip()

    def release_at(self, commit: str) -> Release | None:
        """The newest release tagged exactly at ``commit``, if any."""
        tagged = [r for r in self.releases if r.commit == commit]
        return tagged[-1] if tagged else None

    def label(self, commit: str) -> str:
        """How a version is shown: its release, or the short commit hash when untagged."""
        release = self.release_at(commit)
        return release.tag if release else commit[:12]

    def pep440(self, commit: str) -> Version | None:
        """The version Copier compares migrations with: the release at ``commit``, else the
        nearest release below it as ``<tag>.post<distance>`` (Copier's reading of a describe
        string), None without any release below."""
        release = self.release_at(commit)
        if release:
            return release.version
        described = git(self.local, "describe", "--tags", "--long", commit, check=False).strip()
        match = re.fullmatch(r"(.+)-(\d+)-g[0-9a-f]+", described)
        if not match:
            return None
        try:
            return Version(f"{match.group(1)}.post{match.group(2)}")
        except InvalidVersion:
            return None

    def merged_tags(self, commit: str) -> set[str]:
        """Tags whose commit ``commit`` contains (itself or an ancestor)."""
        if commit not in self._merged:
            self._merged[commit] = set(git(self.local, "tag", "--merged", commit).split())
        return self._merged[commit]

    def missing_releases(self, commit: str) -> list[Release]:
        """Releases whose commit ``commit`` does not contain: what the service is behind by."""
        return [r for r in self.releases if r.tag not in self.merged_tags(commit)]

    def crossed_releases(self, current: str, target: str) -> list[Release]:
        """Releases an update from ``current`` to ``target`` brings in, oldest first."""
        return [r for r in self.missing_releases(current) if r.tag in self.merged_tags(target)]

    def commit_date(self, commit: str) -> datetime:
        stamp = git(self.local, "show", "-s", "--format=%ct", commit).strip()
        return datetime.fromtimestamp(int(stamp), tz=UTC)

    # --- Files at a version -----------------------------------------------------------------

    def file_at(self, commit: str, path: str) -> str | None:
        """A template repository file at ``commit`` (not a render), None when absent."""
        return show_file(self.local, commit, path)

    def copier_config(self, commit: str) -> dict[str, Any]:
        for name in ("copier.yml", "copier.yaml"):
            text = self.file_at(commit, name)
            if text is not None:
                data = yaml.safe_load(text) or {}
                return data if isinstance(data, dict) else {}
        return {}

    def questions(self, commit: str) -> list[str]:
        """The questions of the template's ``copier.yml`` at ``commit`` (Copier's own ``_``
        settings left out), in the file's order."""
        return [str(key) for key in self.copier_config(commit) if not str(key).startswith("_")]

    # --- Renders ----------------------------------------------------------------------------

    def render(self, commit: str, answers: dict[str, Any]) -> dict[str, bytes]:
        """Every file the template renders at ``commit`` with ``answers``, by POSIX path."""
        key = (commit, answers_key(answers))
        if key not in self.renders:
            files = self._read_disk_cache(key)
            if files is None:
                files = self._render_now(commit, answers)
                self._write_disk_cache(key, files)
            self.renders[key] = files
        return self.renders[key]

    def _render_now(self, commit: str, answers: dict[str, Any]) -> dict[str, bytes]:
        from .ownership import RENDER_OWNERSHIP  # the render's own wrapper around Copier

        self.render_count += 1
        target = Path(tempfile.mkdtemp(prefix="render-"))
        try:
            with redirect_output():
                RENDER_OWNERSHIP.render_version(str(self.local), target, answers, commit)
            return {
                path.relative_to(target).as_posix(): path.read_bytes()
                for path in sorted(target.rglob("*"))
                if path.is_file() and not _SKIPPED_PARTS.intersection(path.parts)
            }
        except Exception as error:  # Copier raises many types; the service gets the message
            raise FleetError(f"cannot render the template at {commit[:12]}: {error}") from None
        finally:
            shutil.rmtree(target, ignore_errors=True)

    def _cache_file(self, key: tuple[str, str]) -> Path | None:
        return self.cache_dir / f"render-{key[0]}-{key[1]}.json" if self.cache_dir else None

    def _read_disk_cache(self, key: tuple[str, str]) -> dict[str, bytes] | None:
        cache = self._cache_file(key)
        if cache is None or not cache.is_file():
            return None
        try:
            stored = json.loads(cache.read_text())
            return {path: base64.b64decode(data) for path, data in stored.items()}
        except (ValueError, OSError):
            return None  # a damaged entry is re-rendered and rewritten

    def _write_disk_cache(self, key: tuple[str, str], files: dict[str, bytes]) -> None:
        cache = self._cache_file(key)
        if cache is None:
            return
        cache.parent.mkdir(parents=True, exist_ok=True)
        encoded = {path: base64.b64encode(data).decode() for path, data in files.items()}
        partial = cache.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(encoded))
        partial.replace(cache)  # atomic: concurrent runs never read half an entry


def show_file(repo: Path, commit: str, path: str) -> str | None:
    """``git show commit:path``, None when the file does not exist there."""
    result = subprocess.run(
        ["git", "show", f"{commit}:{path}"], cwd=repo, capture_output=True, check=False
    )
    return result.stdout.decode("utf-8", "replace") if result.returncode == 0 else None


class redirect_output:
    """Send file descriptors 1 and 2 to a log while Copier runs: its tasks and migrations are
    subprocesses that print, and stdout must stay pure JSON with --json. ``text`` holds what
    they printed, for error messages."""

    def __enter__(self) -> redirect_output:
        sys.stdout.flush()
        sys.stderr.flush()
        self.log = tempfile.TemporaryFile()
        self.saved = (os.dup(1), os.dup(2))
        os.dup2(self.log.fileno(), 1)
        os.dup2(self.log.fileno(), 2)
        self.text = ""
        return self

    def __exit__(self, *exc: object) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved[0], 1)
        os.dup2(self.saved[1], 2)
        for fd in self.saved:
            os.close(fd)
        self.log.seek(0)
        self.text = self.log.read().decode("utf-8", "replace")
        self.log.close()
