"""The rendered project's end-to-end suite, run for real on the default and the newest Python: the
service image built from the render's Dockerfile on the local base image, a stub downstream
container, real sockets.

Locally without a Docker engine this skips with the reason; in CI (CI=true) or with
E2E_REQUIRED=1 it runs, and the rendered suite itself fails rather than skips."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from packaging.version import Version

from harness.interpreters import DEFAULT_PYTHON_VERSION, PYTHON_VERSIONS, reported_version
from harness.support import pytest_summary, render, run

pytestmark = pytest.mark.render

REQUIRED = os.environ.get("CI", "").lower() == "true" or os.environ.get("E2E_REQUIRED") == "1"
E2E_TESTS = [
    # tests/e2e/test_users_e2e.py: the example client's (team-owned).
    "test_a_user_is_served_end_to_end",
    "test_c_transient_failures_are_retried",
    # tests/e2e/test_platform_e2e.py: the outbound chain through the probe route.
    "test_platform_trace_context_and_user_agent_reach_the_downstream",
    "test_platform_breaker_opens_when_the_downstream_stops_and_closes_after",
    "test_platform_sigterm_lets_inflight_requests_finish",
    "test_f_runs_as_non_root_read_only_and_turns_healthy",
    "test_the_image_carries_the_sbom_of_what_it_installed",
    # tests/e2e/test_deploy_security.py: the Deployment's security settings, the drain.
    "test_the_deployment_asks_for_the_restricted_settings",
    "test_g_runs_under_the_deployments_security_settings",
    "test_h_docker_stop_drains_100_inflight_requests",
]


# The default Python, the base image's python3, and the newest, which the same Debian tree
# carries beside it (tests/docker/rootfs.sh): a service on each runs in containers.
E2E_PYTHONS = sorted({DEFAULT_PYTHON_VERSION, PYTHON_VERSIONS[-1]}, key=Version)


@pytest.mark.parametrize("version", E2E_PYTHONS)
def test_rendered_e2e_suite_passes(tmp_path: Path, version: str) -> None:
    if not os.environ.get("BASE_IMAGE") and not REQUIRED:
        pytest.skip("no Docker engine prepared (run through `make test`, which sets BASE_IMAGE)")
    # The base image tests/docker/engine.sh built (a Debian release) has the default Python as
    # its python3, so the image under test runs the version a new service gets, and the newest
    # beside it (the Dockerfile makes its venvs with pythonX.Y).
    in_base_image = ["docker", "run", "--rm", "--network", "none", os.environ["BASE_IMAGE"]]
    base_python = reported_version([*in_base_image, "python3"], tmp_path)
    assert base_python == DEFAULT_PYTHON_VERSION, (
        f"{os.environ['BASE_IMAGE']} has Python {base_python}, the default python_version is "
        f"{DEFAULT_PYTHON_VERSION}: build the base image from the Debian release that has it "
        "(DEBIAN_SUITE in tests/docker/engine.sh)"
    )
    assert reported_version([*in_base_image, f"python{version}"], tmp_path) == version
    project = render(tmp_path / "service", {"python_version": version})
    # A local secret in the build context: test f checks that the image does not carry it.
    (project / ".env").write_text("MY_SERVICE_LOG_LEVEL=INFO  # canary: must not reach the image\n")
    run(["make", "install"], cwd=project)
    result = run(["make", "test-e2e", "PYTEST_ARGS=-v"], cwd=project, env={"E2E_REQUIRED": "1"})
    for name in E2E_TESTS:
        assert re.search(rf"{name} PASSED", result.stdout), f"{name} did not pass:\n{result.stdout}"
    summary = pytest_summary(result.stdout)
    assert summary.startswith(f"{len(E2E_TESTS)} passed"), summary
    assert "skipped" not in summary, summary
    if version != DEFAULT_PYTHON_VERSION:
        return
    # A base image the engine cannot get (no registry here) fails with what to do instead of the
    # Docker SDK's traceback.
    with pytest.raises(AssertionError) as failed:
        run(
            ["make", "test-e2e", "PYTEST_ARGS=-k test_a_user_is_served_end_to_end"],
            cwd=project,
            env={"E2E_REQUIRED": "1", "BASE_IMAGE": "absent.invalid/python:0"},
        )
    output = str(failed.value)
    assert "building the e2e images on BASE_IMAGE=absent.invalid/python:0 failed" in output
    assert "BASE_IMAGE=<image> make test-e2e" in output
    assert "Traceback" not in output, output
