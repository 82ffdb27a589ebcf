"""The how-to guides (docs/how-to/) work as written: every ```bash block of a guide runs, in
order, in one shell (`set -euo pipefail`), against real renders, and each test checks what the
guide promises. A guide without a test here fails `test_every_guide_is_tested`.

Renders are cheap (seconds) and each guide gets its own, so the guides stay independent. The
update guides use a template repository built here with two releases, OLD and NEW, where NEW
changes a line of the Dockerfile that a service may have edited too (a real conflict).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.support import (
    CONFLICT_MARKER,
    REPO_ROOT,
    commit_all,
    copy_project,
    copy_working_tree,
    ensure_debian_package,
    git,
    init_repo,
    pytest_summary,
    render,
    run,
)
from tests.test_deploy import KUBECTL

pytestmark = [pytest.mark.xdist_group("howto"), pytest.mark.render]

GUIDES = REPO_ROOT / "docs/how-to"
E2E_REQUIRED = os.environ.get("CI", "").lower() == "true" or os.environ.get("E2E_REQUIRED") == "1"
OLD, NEW = "9.0.0", "9.1.0"
# The release NEW pins another uv in the Dockerfile; a service that pinned its own conflicts.
_UV_PIN = re.compile(r"^ARG UV_VERSION=.*$", re.MULTILINE)
NEW_UV_PIN, TEAM_UV_PIN = "ARG UV_VERSION=0.99.0", "ARG UV_VERSION=0.98.0"
_BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def guide_commands(name: str) -> str:
    """The ```bash blocks of ``docs/how-to/<name>.md``, in order, as one script."""
    blocks = _BASH_BLOCK.findall((GUIDES / f"{name}.md").read_text())
    assert blocks, f"docs/how-to/{name}.md has no ```bash block to run"
    return "\n".join(blocks)


def run_guide(name: str, cwd: Path, env: Mapping[str, str]) -> str:
    """Run the guide's commands in ``cwd`` with ``env``; fail with its output if one fails."""
    script = "set -euo pipefail\nexec 2>&1\n" + guide_commands(name)
    done = run(["bash", "-c", script], cwd=cwd, env={**env}, timeout=900)
    return done.stdout


def _answers(project: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((project / ".copier-answers.yml").read_text())
    return loaded


def _clean(project: Path) -> bool:
    return git(project, "status", "--porcelain") == ""


def test_every_guide_is_tested() -> None:
    guides = {path.stem for path in GUIDES.glob("*.md")} - {"index"}
    tested = {name.removeprefix("test_").replace("_", "-") for name in globals()}
    assert guides <= tested, f"guides without a test here: {sorted(guides - tested)}"
    for name in guides:
        guide_commands(name)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This template as a repository with two releases: OLD, and NEW with a new uv pin."""
    repo = init_repo(copy_working_tree(tmp_path_factory.mktemp("template")))
    commit_all(repo, "The template as it is", tag=OLD)
    dockerfile = repo / "template/Dockerfile.jinja"
    text, count = _UV_PIN.subn(NEW_UV_PIN, dockerfile.read_text())
    assert count == 1, "the Dockerfile's uv pin moved: update this test"
    dockerfile.write_text(text)
    commit_all(repo, "Pin a newer uv", tag=NEW)
    return repo


def _service_at_old(template: Path, dst: Path, *, pinned: bool = False, **answers: Any) -> Path:
    """A service rendered at OLD and committed; ``pinned``: its team also pinned its own uv."""
    project = copy_project(template, dst, OLD, answers)
    if pinned:
        dockerfile = project / "Dockerfile"
        dockerfile.write_text(_UV_PIN.sub(TEAM_UV_PIN, dockerfile.read_text()))
        commit_all(project, "Pin our uv")
    return project


def _default_render(dst: Path) -> Path:
    project = render(dst)
    commit_all(project, "Render the template")
    return project


def test_adopt_an_existing_service(template: Path, tmp_path: Path) -> None:
    legacy = init_repo(tmp_path / "orders")
    (legacy / "README.md").write_text("# orders\n\nThe orders service.\n")
    (legacy / "orders.py").write_text(
        '"""The orders routes, from before the template."""\n\n'
        "from __future__ import annotations\n\n"
        "from fastapi import APIRouter\n\n"
        "router = APIRouter()\n\n\n"
        '@router.get("/orders/{order_id}")\n'
        "async def read_order(order_id: int) -> dict[str, object]:\n"
        '    """Return one order."""\n'
        '    return {"id": order_id, "status": "shipped"}\n'
    )
    commit_all(legacy, "The orders service")
    output = run_guide(
        "adopt-an-existing-service", tmp_path, {"TEMPLATE": str(template), "LEGACY": str(legacy)}
    )
    assert re.search(r"^200 \{'id': 7, 'status': 'shipped'\} [0-9a-f]{32}$", output, re.M), output
    assert _answers(legacy)["service_name"] == "orders-api"
    assert (legacy / "src/orders_api/orders.py").is_file() and not (legacy / "orders.py").exists()
    assert git(legacy, "log", "-1", "--format=%s").strip() == "Adopt the service template"
    assert _clean(legacy)


def test_add_a_downstream_client(tmp_path: Path) -> None:
    # The guide ends with its end-to-end test (Docker, the base image `make test` prepares).
    if not os.environ.get("BASE_IMAGE") and not E2E_REQUIRED:
        pytest.skip("no Docker engine prepared (run through `make test`, which sets BASE_IMAGE)")
    service = _default_render(tmp_path / "my-service")
    env = {"SERVICE": str(service), "E2E_REQUIRED": "1"}
    output = run_guide("add-a-downstream-client", tmp_path, env)
    units = re.search(r"^(\d+) passed in", output, re.M)
    assert units is not None and int(units.group(1)) >= 4 + 6, output  # test_orders, test_settings
    assert re.search(r"test_an_order_is_placed_once_with_its_key PASSED", output), output
    summary = pytest_summary(output)
    assert summary.startswith("1 passed"), output
    assert "failed" not in summary and "error" not in summary and "skipped" not in summary
    assert (service / "tests/test_orders.py").is_file()


def test_tune_resilience(tmp_path: Path) -> None:
    service = _default_render(tmp_path / "my-service")
    output = run_guide("tune-resilience", tmp_path, {"SERVICE": str(service)})
    assert "users-api:8000: attempts=2 deadline=3.0s open=5.0s minimum_calls=5" in output, output
    assert "any other host: attempts=3 open=15.0s" in output, output
    assert "unknown field(s) max_attemps; allowed: max_attempts" in output, output


def test_remove_the_example_client(template: Path, tmp_path: Path) -> None:
    service = _service_at_old(template, tmp_path / "my-service")
    output = run_guide("remove-the-example-client", tmp_path, {"SERVICE": str(service)})
    assert _answers(service)["include_example_client"] is False
    for path in ("src/my_service/users.py", "tests/test_users.py", "tests/e2e/test_users_e2e.py"):
        assert not (service / path).exists(), path
    assert "users" not in (service / "src/my_service/service.py").read_text()
    assert "USERS_SERVICE" not in (service / ".env.example").read_text()
    assert not CONFLICT_MARKER.search(output), output
    summary = pytest_summary(output)
    assert "passed" in summary and "failed" not in summary and "error" not in summary, output
    assert _clean(service)


def test_update_and_resolve_conflicts(template: Path, tmp_path: Path) -> None:
    service = _service_at_old(template, tmp_path / "my-service", pinned=True)
    settings = (service / "src/my_service/settings.py").read_text()
    output = run_guide("update-and-resolve-conflicts", tmp_path, {"SERVICE": str(service)})
    assert re.search(r"^\./Dockerfile$", output, re.M), f"no conflict was found:\n{output}"
    assert _answers(service)["_commit"] == NEW
    dockerfile = (service / "Dockerfile").read_text()
    assert NEW_UV_PIN in dockerfile and not CONFLICT_MARKER.search(dockerfile)
    assert (service / "src/my_service/settings.py").read_text() == settings
    assert _clean(service)


def test_undo_a_bad_update(template: Path, tmp_path: Path) -> None:
    service = _service_at_old(template, tmp_path / "my-service")
    rendered = git(service, "rev-parse", "HEAD:")
    output = run_guide("undo-a-bad-update", tmp_path, {"SERVICE": str(service)})
    assert f"_commit: {OLD}" in output, output
    assert _answers(service)["_commit"] == OLD
    assert git(service, "rev-parse", "HEAD:") == rendered, "the tree is not the release's again"
    assert _clean(service)


@pytest.mark.xdist_group("howto-fleet")  # the slowest guide: beside the others, not after them
def test_roll_out_across_a_fleet(template: Path, tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    orders = _service_at_old(template, fleet / "orders-api", pinned=True, service_name="orders-api")
    billing = _service_at_old(template, fleet / "billing-api", service_name="billing-api")
    work = tmp_path / "work"
    work.mkdir()
    env = {"FLEET": str(fleet), "TEMPLATE_CHECKOUT": str(REPO_ROOT)}
    output = run_guide("roll-out-across-a-fleet", work, env)
    plan = (work / "plan.txt").read_text()
    assert "orders-api" in plan and "Dockerfile" in plan, plan
    assert (work / "fleet-report.html").read_text().lstrip().lower().startswith("<!doctype html")
    branches = git(billing, "branch", "--list", "--format=%(refname:short)").split()
    updated = [branch for branch in branches if branch != "main"]
    assert len(updated) == 1, output
    answers = yaml.safe_load(git(billing, "show", f"{updated[0]}:.copier-answers.yml"))
    assert answers["_commit"] == NEW
    assert git(orders, "branch", "--list", "--format=%(refname:short)").split() == ["main"]


def test_deploy_to_kubernetes(tmp_path: Path) -> None:
    service = _default_render(tmp_path / "my-service")
    env = {"SERVICE": str(service)}
    if shutil.which("kubectl") is None:  # the same kubectl as tests/test_deploy.py
        shim = tmp_path / "bin/kubectl"
        shim.parent.mkdir()
        shim.write_text(f'#!/bin/sh\nexec {KUBECTL} "$@"\n')
        shim.chmod(0o755)
        env["PATH"] = f"{shim.parent}:{os.environ['PATH']}"
    output = run_guide("deploy-to-kubernetes", tmp_path, env)
    assert "image: registry.example.com/my-service:1.4.2" in output, output
    assert "MY_SERVICE_USERS_SERVICE__BASE_URL: http://users-api.users-staging:8000" in output


def test_alerts_and_dashboard(tmp_path: Path) -> None:
    ensure_debian_package("prometheus", ["/usr/bin/promtool", "/usr/bin/prometheus"])
    service = _default_render(tmp_path / "my-service")
    output = run_guide("alerts-and-dashboard", tmp_path, {"SERVICE": str(service)})
    assert "SUCCESS: 1 rules found" in output, output
    assert re.search(r"^- .+", output, re.M), f"the dashboard listed no panel:\n{output}"
