"""The service in its container, over real sockets: how it runs, whatever routes it has."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Stack, eventually, needs_containers

pytestmark = pytest.mark.e2e


@needs_containers
def test_f_runs_as_non_root_read_only_and_turns_healthy(stack: Stack) -> None:
    container: Any = stack.service.get_wrapped_container()
    exit_code, output = container.exec_run(["id", "-u"])
    assert exit_code == 0
    assert output.strip() != b"0"
    assert output.strip() == b"10001"
    exit_code, output = container.exec_run(["touch", "/app/written"])
    assert exit_code != 0, "the root filesystem should be read-only"
    assert b"Read-only file system" in output
    # .dockerignore keeps local secrets out of the image, even when a .env sits in the project.
    _, output = container.exec_run(["sh", "-c", "find / -xdev -name .env 2>/dev/null"])
    assert output.strip() == b"", output

    def healthy() -> bool:
        container.reload()
        return bool(container.attrs["State"]["Health"]["Status"] == "healthy")

    eventually(healthy, 60, "the HEALTHCHECK to report healthy")
