"""What the template tests, the demo and the benchmark share: rendering, running commands in a
render, and starting a rendered service with the stub downstream it ships."""

from __future__ import annotations

import contextlib
import os
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


def run(
    cmd: list[str], cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in ``cwd``; on failure raise with its whole output, so a test says why."""
    result = subprocess.run(
        cmd,
        cwd=cwd,
        env={**os.environ, **(env or {})},
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


@dataclass
class RunningService:
    base_url: str
    stub_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_lines(self) -> list[dict[str, Any]]:
        import json

        lines = []
        for raw in self.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(raw))
        return lines


@contextlib.contextmanager
def serve(
    project: Path, package: str, env: Mapping[str, str] | None = None
) -> Iterator[RunningService]:
    """Start the stub downstream and the rendered service (uvicorn, JSON logs) on loopback."""
    stub_port, port = free_port(), free_port()
    stub = subprocess.Popen(
        [sys.executable, str(project / "tests/e2e/stub_downstream.py"), "--port", str(stub_port)],
        stdout=subprocess.DEVNULL,
    )
    prefix = package.upper() + "_"
    service_env = {
        **os.environ,
        f"{prefix}HOST": "127.0.0.1",
        f"{prefix}PORT": str(port),
        f"{prefix}LOG_FORMAT": "json",
        f"{prefix}USERS_SERVICE__BASE_URL": f"http://127.0.0.1:{stub_port}",
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
    try:
        wait_http(f"http://127.0.0.1:{stub_port}/_stub/calls")
        wait_http(f"http://127.0.0.1:{port}/readyz")
        yield RunningService(
            f"http://127.0.0.1:{port}", f"http://127.0.0.1:{stub_port}", log_path, service
        )
    finally:
        for proc in (service, stub):
            proc.terminate()
        for proc in (service, stub):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
