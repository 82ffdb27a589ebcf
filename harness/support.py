"""What the template tests, the demo and the benchmark share: rendering, running commands in a
render, and starting a rendered service with the stub downstream it ships."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import copier
from copier.errors import DirtyLocalWarning

from fleet.environment import without_make_variables

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ANSWERS: dict[str, Any] = {"service_name": "my-service", "package_name": "my_service"}


def render(
    dst: Path,
    answers: Mapping[str, Any] | None = None,
    *,
    src: Path = REPO_ROOT,
    vcs_ref: str | None = "HEAD",
) -> Path:
    """Render the template into ``dst`` non-interactively (defaults for unanswered questions).

    ``vcs_ref="HEAD"`` renders the working tree, uncommitted edits included, so the tests check
    what the developer is about to commit.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DirtyLocalWarning)
        copier.run_copy(
            str(src),
            str(dst),
            data=dict(answers or {}),
            defaults=True,
            unsafe=True,
            vcs_ref=vcs_ref,
            quiet=True,
        )
    return dst


def ensure_debian_package(package: str, binaries: list[str]) -> None:
    """Install Debian's ``package`` when one of ``binaries`` is missing: in CI (CI=true) or as
    root; elsewhere skip the calling test, saying why. CI without apt-get fails instead, since a
    test skipped in CI checks nothing. Installs of parallel test workers take turns (dpkg holds
    one lock), and the package's own service is never started."""
    import fcntl

    import pytest

    if all(os.access(binary, os.X_OK) for binary in binaries):
        return
    in_ci = os.environ.get("CI", "").lower() == "true"
    if in_ci and shutil.which("apt-get") is None:
        pytest.fail(f"CI needs Debian's {package} package, and this machine has no apt-get")
    if not (in_ci or os.geteuid() == 0) or shutil.which("apt-get") is None:
        pytest.skip(
            f"needs Debian's {package} package (apt-get install {package}); "
            "installed automatically in CI (CI=true) or as root"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with open("/tmp/template-tests-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if all(os.access(binary, os.X_OK) for binary in binaries):
            return  # another worker installed it meanwhile
        # policy-rc.d refuses to start the package's service: tests run their own processes.
        policy = Path("/usr/sbin/policy-rc.d")
        had_policy = policy.exists()
        if not had_policy:
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
        try:
            subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, timeout=600)
            subprocess.run(
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
                env=env,
                check=True,
                timeout=900,
            )
        finally:
            if not had_policy:
                policy.unlink()


# No network: uv may not reach the index, and anything that tries goes to an unroutable proxy.
_UNROUTABLE = "http://10.255.255.1:9"
OFFLINE = {
    "UV_OFFLINE": "1",
    **{name: _UNROUTABLE for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")},
    **{name.lower(): _UNROUTABLE for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")},
    "NO_PROXY": "",
    "no_proxy": "",
}


def replace_once(path: Path, old: str, new: str) -> None:
    """Replace ``old``, which must occur exactly once in ``path``, with ``new``."""
    text = path.read_text()
    assert text.count(old) == 1, f"{path}: expected {old!r} once; update the test's edit"
    path.write_text(text.replace(old, new))


def run(
    cmd: list[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``cwd``; on failure raise with its whole output, so a test says why."""
    result = subprocess.run(
        cmd,
        cwd=cwd,
        env={**without_make_variables(os.environ), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed in {cwd} ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


# The mypy cache that typecheck() shares between renders, when the test session names one.
SHARED_MYPY_CACHE = "TEMPLATE_TESTS_MYPY_CACHE"


def typecheck(project: Path) -> subprocess.CompletedProcess[str]:
    """`make typecheck` in ``project``, on the shared mypy cache ``$TEMPLATE_TESTS_MYPY_CACHE``
    when it is set: a module another render already checked, byte for byte, is not checked again.

    mypy trusts a cached module without reading it when its relative path, size and mtime (in
    whole seconds) match, and two renders' files can match in all three while their contents
    differ. So every Python file of ``project`` first gets an mtime that no earlier run on that
    cache has used: each module is then revalidated by its content hash. One process at a time
    per cache (the tests use one per worker)."""
    cache = os.environ.get(SHARED_MYPY_CACHE)
    if not cache:
        return run(["make", "typecheck"], cwd=project)
    counter = Path(cache) / "last-mtime"
    counter.parent.mkdir(parents=True, exist_ok=True)
    mtime = int(counter.read_text()) + 1 if counter.exists() else 1_000_000_000
    counter.write_text(str(mtime))
    for folder, subfolders, files in os.walk(project):
        subfolders[:] = [name for name in subfolders if name not in (".git", ".venv")]
        for name in files:
            if name.endswith((".py", ".pyi")):
                os.utime(os.path.join(folder, name), (mtime, mtime))
    return run(["make", "typecheck"], cwd=project, env={"MYPY_CACHE_DIR": cache})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0) -> None:
    """Wait until ``url`` answers 200, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer 200 within {timeout}s")
        time.sleep(0.1)


def pytest_summary(output: str) -> str:
    """The closing counts of a pytest run ("12 passed, 1 skipped"), in any verbosity."""
    found = re.findall(r"^=*\s*(\d+ \w+.*?) in [0-9.]+s", output, re.MULTILINE)
    if not found:
        raise AssertionError(f"no pytest summary in:\n{output}")
    return str(found[-1])


def _wait_for_bind(process: subprocess.Popen[bytes], log_path: Path, timeout: float = 15) -> None:
    """Fail unless ``process`` itself serves: a free port can be taken by another program
    between ``free_port()`` and the bind, and /readyz would then answer for that program."""
    deadline = time.monotonic() + timeout
    while "Uvicorn running on" not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the service did not start:\n{log_path.read_text()}")
        time.sleep(0.05)


@dataclass
class RunningService:
    """A rendered service running as a process, and where its downstream and logs are."""

    base_url: str
    stub_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def open_fds(self) -> int:
        """How many file descriptors the service process holds open (Linux)."""
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def memory(self, field: str) -> int:
        """The service process's ``VmRSS`` (resident now) or ``VmHWM`` (the peak resident
        size since it started) in bytes, from /proc (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0]) * 1024  # reported in kB
        msg = f"no {field} in /proc/{self.process.pid}/status"
        raise LookupError(msg)

    def log_lines(self) -> list[dict[str, Any]]:
        import json

        lines = []
        for raw in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
        return lines


@contextlib.contextmanager
def serve(
    project: Path,
    package: str,
    env: Mapping[str, str] | None = None,
    *,
    downstream_url: str | None = None,
) -> Iterator[RunningService]:
    """Start the rendered service (uvicorn, JSON logs) on loopback, in front of
    ``downstream_url``, or of the stub downstream the render ships when none is given."""
    port = free_port()
    stub = None
    if downstream_url is None:
        stub_port = free_port()
        stub = subprocess.Popen(
            [
                sys.executable,
                str(project / "tests/e2e/stub_downstream.py"),
                "--port",
                str(stub_port),
            ],
            stdout=subprocess.DEVNULL,
        )
        downstream_url = f"http://127.0.0.1:{stub_port}"
        wait_http(f"{downstream_url}/_stub/calls")
    prefix = package.upper() + "_"
    service_env = {
        **os.environ,
        f"{prefix}HOST": "127.0.0.1",
        f"{prefix}PORT": str(port),
        f"{prefix}LOG_FORMAT": "json",
        f"{prefix}USERS_SERVICE__BASE_URL": downstream_url,
        **(env or {}),
    }
    log_path = project / "service.log"
    with log_path.open("wb") as log_file:
        service = subprocess.Popen(
            [str(project / ".venv/bin/python"), "-m", package],
            cwd=project,
            env=service_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    processes = [service] if stub is None else [service, stub]
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz")
        _wait_for_bind(service, log_path)
        yield RunningService(f"http://127.0.0.1:{port}", downstream_url, log_path, service)
    finally:
        for proc in processes:  # all of them drain at once
            if proc.poll() is None:
                proc.terminate()
        for proc in processes:
            stop_process(proc)


# Template versions and updates (tests/test_update.py). Template versions are built and tagged in
# temporary git repositories, never in this one: the tests must not depend on tags here.

# Commits and tags in temporary repositories need an identity and no signing, whatever the
# machine's git configuration says.
_GIT_TEST_CONFIG = [
    "-c",
    "user.name=Template Tests",
    "-c",
    "user.email=template-tests@example.invalid",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "tag.gpgsign=false",
]
CONFLICT_MARKER = re.compile(r"^(<{7}|={7}|>{7})( |$)", re.MULTILINE)
# A released version is a `## <PEP 440 version>` heading in CHANGELOG.md, newest first.
_CHANGELOG_HEADING = re.compile(r"^## (\S+)(?: - \d{4}-\d{2}-\d{2})?\s*$", re.MULTILINE)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM (the drain a server is given), then SIGKILL after ``timeout`` seconds."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` and return its stdout."""
    return run(["git", *_GIT_TEST_CONFIG, *args], cwd=cwd).stdout


def working_tree_files(root: Path = REPO_ROOT) -> list[str]:
    """The files a commit of ``root`` would hold now: tracked and untracked, less what .gitignore
    ignores and what was deleted."""
    listed = git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    return sorted({path for path in listed.split("\0") if path and (root / path).is_file()})


def copy_working_tree(dst: Path, root: Path = REPO_ROOT) -> Path:
    """Copy this repository's working tree (uncommitted edits included) into ``dst``."""
    for relative in working_tree_files(root):
        target = dst / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, target)
    return dst


def clear_tree(repo: Path) -> None:
    """Delete everything in ``repo`` but its ``.git``."""
    for child in repo.iterdir():
        if child.name == ".git":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def commit_all(repo: Path, message: str, tag: str | None = None) -> str:
    """Commit everything in ``repo`` (tag it if asked) and return the commit's hash."""
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "--allow-empty", "--no-verify", "-m", message)
    if tag is not None:
        git(repo, "tag", tag)
    return git(repo, "rev-parse", "HEAD").strip()


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "--quiet", "--initial-branch=main")
    return path


def copy_project(
    src: Path, dst: Path, vcs_ref: str, answers: Mapping[str, Any] | None = None
) -> Path:
    """Render ``src`` at ``vcs_ref`` into ``dst`` and commit it, as a service owner would."""
    render(dst, answers, src=src, vcs_ref=vcs_ref)
    commit_all(dst, f"Render the template at {vcs_ref}")
    return dst


def update_project(
    project: Path, vcs_ref: str | None = None, data: Mapping[str, Any] | None = None
) -> None:
    """`copier update --trust --defaults --conflict inline`, to ``vcs_ref`` or the latest tag,
    with ``data`` as new answers (`--data`)."""
    copier.run_update(
        str(project),
        data=dict(data or {}),
        defaults=True,
        overwrite=True,
        unsafe=True,
        conflict="inline",
        vcs_ref=vcs_ref,
        quiet=True,
    )


def project_files(project: Path) -> dict[str, bytes]:
    """Every file of ``project`` but git's own and what a `make install` leaves, by path."""
    skipped = {".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__"}
    return {
        path.relative_to(project).as_posix(): path.read_bytes()
        for path in sorted(project.rglob("*"))
        if path.is_file() and not skipped.intersection(path.relative_to(project).parts)
    }


def conflict_markers(project: Path) -> list[str]:
    """``path:line: marker`` for every merge-conflict marker line in ``project``."""
    found = []
    for relative, content in project_files(project).items():
        text = content.decode("utf-8", errors="replace")
        for match in CONFLICT_MARKER.finditer(text):
            number = text.count("\n", 0, match.start()) + 1
            line = text[match.start() :].split("\n", 1)[0]
            found.append(f"{relative}:{number}: {line}")
    return found


def rejected_hunks(project: Path) -> list[str]:
    """``.rej`` files, which `--conflict inline` must never leave."""
    return sorted(
        path.relative_to(project).as_posix()
        for path in project.rglob("*.rej")
        if ".git" not in path.relative_to(project).parts
    )


def unmerged_paths(project: Path) -> list[str]:
    return sorted(git(project, "diff", "--name-only", "--diff-filter=U").split())


def released_versions(changelog: Path = REPO_ROOT / "CHANGELOG.md") -> list[str]:
    """The released template versions, as CHANGELOG.md lists them (newest first)."""
    from packaging.version import InvalidVersion, Version

    versions = []
    for heading in _CHANGELOG_HEADING.findall(changelog.read_text()):
        try:
            Version(heading)
        except InvalidVersion:
            continue  # "Unreleased"
        versions.append(heading)
    return versions


def release_commit(version: str, repo: Path = REPO_ROOT) -> str | None:
    """The commit that released ``version``: its tag if the tag exists here, else the oldest
    commit whose CHANGELOG.md has the version's heading (the release procedure tags exactly that
    commit). None when neither is in this repository's history yet."""
    return release_tag(version, repo) or changelog_commit(version, repo)


def release_tag(version: str, repo: Path = REPO_ROOT) -> str | None:
    """The commit that the tag ``version`` points to, if this clone has the tag."""
    tagged = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"refs/tags/{version}^{{commit}}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    return tagged.stdout.strip() if tagged.returncode == 0 else None


def changelog_commit(version: str, repo: Path = REPO_ROOT) -> str | None:
    """The oldest commit whose CHANGELOG.md has the heading of ``version``, if any."""
    heading = "^## " + re.escape(version) + "( |$)"
    added = git(repo, "log", "--reverse", "--format=%H", "-G", heading, "--", "CHANGELOG.md")
    commits = added.split()
    return commits[0] if commits else None
