"""The update-safe layout: the ownership map, the drift report, and the promise that a template
release never conflicts with a service customized in its own seams.

A service rendered from the working tree (``CURRENT``) and customized heavily in every
team-owned seam is updated to a synthetic next release (``NEXT``, harness/releases.py). Renders
are shared within the module (an xdist group keeps them on one worker).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.releases import CURRENT, NEXT, PACKAGE, check_update, ownership_tool
from harness.support import (
    OFFLINE,
    REPO_ROOT,
    commit_all,
    copy_project,
    git,
    project_files,
    render,
    replace_once,
    run,
    typecheck,
    update_project,
)
from tests.test_deploy import KUBECTL
from tests.test_fleet import GLOB_CASES

pytestmark = pytest.mark.render

# The variants whose maps are checked: the defaults and every optional part switched off.
MAP_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "bare": {
        "include_example_client": False,
        "include_metrics": False,
        "include_otlp_exporter": False,
        "ci_provider": "none",
    },
    "gitlab": {"ci_provider": "gitlab"},
}


# --- The map ------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", MAP_VARIANTS)
def test_every_rendered_file_has_exactly_one_owner(tmp_path: Path, variant: str) -> None:
    project = render(tmp_path / "svc", MAP_VARIANTS[variant])
    tool = ownership_tool(project)
    ownership = tool.load_map(project)
    owners = {path: tool.owners(path, ownership) for path in project_files(project)}
    assert {path: kinds for path, kinds in owners.items() if len(kinds) != 1} == {}
    # Every pattern names something this render has, so the map cannot rot silently.
    unused = [
        glob
        for kind in tool.KINDS
        for glob in ownership[kind]
        if not any(tool.matches(path, glob) for path in owners)
    ]
    assert unused == []


def test_team_owned_files_are_exactly_what_copier_skips_if_they_exist(tmp_path: Path) -> None:
    """The map's team_owned list and copier.yml's _skip_if_exists say the same thing."""
    project = render(tmp_path / "svc")
    ownership = ownership_tool(project).load_map(project)
    config = yaml.safe_load((REPO_ROOT / "copier.yml").read_text())
    skipped = {item.replace("{{ package_name }}", PACKAGE) for item in config["_skip_if_exists"]}
    assert set(ownership["team_owned"]) == skipped


def test_a_renders_matcher_passes_the_one_table_of_glob_cases(tmp_path: Path) -> None:
    tool = ownership_tool(render(tmp_path / "svc"))
    wrong = [case for case in GLOB_CASES if tool.matches(case[0], case[1]) is not case[2]]
    assert wrong == []


# --- Drift --------------------------------------------------------------------------------------


def _drift(project: Path, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "tools/ownership.py", "drift"],
        cwd=project,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def at_current(releases: tuple[Path, list[str]], tmp_path: Path) -> Path:
    """A service rendered from CURRENT, as released."""
    repo, _ = releases
    return copy_project(repo, tmp_path / "svc", CURRENT)


@pytest.mark.xdist_group("next-release")
def test_lint_with_its_drift_check_runs_offline_once_installed(
    at_current: Path, tmp_path: Path
) -> None:
    project = at_current
    run(["make", "install"], cwd=project)
    # An empty uv cache too: nothing lint needs may come from anywhere but the installed .venv.
    empty_cache = {"UV_CACHE_DIR": str(tmp_path / "empty-uv-cache")}
    lint = run(["make", "lint"], cwd=project, env={**OFFLINE, **empty_cache})
    assert "template drift: none" in lint.stdout, lint.stdout + lint.stderr


@pytest.mark.xdist_group("next-release")
def test_drift_reports_edited_template_owned_files_and_fails_only_when_asked(
    at_current: Path,
) -> None:
    project = at_current
    clean = _drift(project)
    assert clean.returncode == 0, clean.stderr
    assert "template drift: none" in clean.stdout
    core = project / "src" / PACKAGE / "core"
    (core / "retry.py").write_text((core / "retry.py").read_text() + "# a local patch\n")
    (core / "redact.py").unlink()
    service = project / "src" / PACKAGE / "service.py"
    service.write_text(service.read_text() + "# team code is never drift\n")
    warned = _drift(project)
    assert warned.returncode == 0, warned.stderr
    lines = warned.stderr.splitlines()
    assert len(lines) == 2, warned.stderr
    assert lines[0].startswith(f"template drift: src/{PACKAGE}/core/redact.py: deleted")
    assert lines[1].startswith(f"template drift: src/{PACKAGE}/core/retry.py: modified")
    assert "service.configure" in lines[1]
    failed = _drift(project, TEMPLATE_DRIFT="error")
    assert failed.returncode == 1
    assert "failing (TEMPLATE_DRIFT=error)" in failed.stdout


def test_drift_says_when_it_cannot_tell(tmp_path: Path) -> None:
    project = render(tmp_path / "svc")
    answers = project / ".copier-answers.yml"
    answers.write_text(answers.read_text().replace("_commit:", "_old_commit:"))
    result = _drift(project)
    assert result.returncode == 0
    assert "template drift: not checked" in result.stderr
    assert "records no template version" in result.stderr
    assert _drift(project, TEMPLATE_DRIFT="error").returncode == 1


# --- The promise: a release never conflicts with a service customized in its seams ------------

ORDERS_MODULE = '''"""The orders service: a second downstream."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from .core.errors import DownstreamError, DownstreamNotFound
from .core.http_client import SharedHttpClient

router = APIRouter(tags=["orders"])


class Order(BaseModel):
    id: int
    total: float


class OrdersClient:
    name = "orders-service"

    def __init__(self, http: SharedHttpClient, base_url: str) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")

    async def get_order(self, order_id: int) -> Order:
        try:
            response = await self._http.get(f"{self._base_url}/orders/{order_id}")
        except httpx.TransportError as exc:
            raise DownstreamError(self.name, "unreachable") from exc
        if response.status_code == httpx.codes.NOT_FOUND:
            raise DownstreamNotFound(self.name, f"order {order_id} does not exist")
        if response.status_code != httpx.codes.OK:
            raise DownstreamError(self.name, f"answered {response.status_code}")
        return Order.model_validate_json(response.content)


def get_orders_client(request: Request, http: SharedHttpClient) -> OrdersClient:
    return OrdersClient(http, str(request.app.state.settings.orders_service.base_url))


@router.get("/orders/{order_id}")
async def read_order(
    order_id: int, orders: Annotated[OrdersClient, Depends(get_orders_client)]
) -> Order:
    return await orders.get_order(order_id)
'''

ORDERS_TEST = f'''"""The team's tests of its second downstream."""

from __future__ import annotations

import httpx
import respx
from fastapi.testclient import TestClient

from {PACKAGE}.settings import Settings


def test_an_order_comes_from_the_orders_service(
    client: TestClient, mock_downstream: respx.MockRouter
) -> None:
    mock_downstream.get("/orders/7").mock(
        return_value=httpx.Response(200, json={{"id": 7, "total": 9.5}})
    )
    assert client.get("/orders/7").json() == {{"id": 7, "total": 9.5}}


def test_orders_settings_and_policy() -> None:
    settings = Settings(_env_file=None)
    assert settings.orders_page_size == 50
    assert settings.retry_for(settings.orders_service.host).max_attempts == 2
'''

TEAM_SETTINGS = '''

class OrdersServiceSettings(DownstreamSettings):
    """The orders service; its policy as field defaults, as docs/architecture.md says."""

    base_url: AnyHttpUrl = AnyHttpUrl("http://orders-api:8000")
    retry: dict[str, Any] = Field(default={"max_attempts": 2})
'''

GREETINGS_MODULE = '''"""A route of the team's own."""

from fastapi import APIRouter

router = APIRouter()


@router.get("/hello")
async def hello() -> dict[str, str]:
    return {"hello": "world"}
'''

STUB_ROUTE = '''

@route(r"/orders/(\\\\d+)")
def order(request: StubRequest) -> Answer:
    """The orders service."""
    return 200, {"id": int(request.match.group(1)), "total": 9.5}
'''

README_SECTION = "\n## Orders\n\nThis service also reads orders from the orders service.\n"
TEAM_ALERT = """groups:
  - name: my-service-team
    rules:
      - alert: OrdersSlow
        expr: sum(rate(http_client_requests_total{job="my-service"}[5m])) > 1000
        for: 10m
        labels:
          severity: ticket
        annotations:
          summary: Calls to the orders service are slow
          runbook_url: https://git.example.invalid/my-service/blob/main/docs/runbook.md#ordersslow
"""
ENV_LINES = (
    "MY_SERVICE_ORDERS_PAGE_SIZE=50\n"
    "MY_SERVICE_ORDERS_SERVICE__BASE_URL=http://127.0.0.1:8002\n"
    "# MY_SERVICE_ORDERS_SERVICE__RETRY={}\n"
    "# MY_SERVICE_ORDERS_SERVICE__BREAKER={}\n"
)
DEPENDENCY_MARKER = (
    "    # Your service's own dependencies go below this line (the template never edits them).\n"
)


def customize_every_seam(project: Path) -> None:
    """A heavy customization, only in team-owned and shared files."""
    package = project / "src" / PACKAGE
    (package / "orders.py").write_text(ORDERS_MODULE)
    (package / "greetings.py").write_text(GREETINGS_MODULE)
    (project / "tests/test_orders.py").write_text(ORDERS_TEST)
    settings = package / "settings.py"
    replace_once(
        settings,
        "from pydantic import AnyHttpUrl\n",
        "from typing import Any\n\nfrom pydantic import AnyHttpUrl, Field\n",
    )
    replace_once(
        settings,
        "\n\nclass Settings(PlatformSettings):",
        TEAM_SETTINGS + "\n\nclass Settings(PlatformSettings):",
    )
    replace_once(
        settings,
        "    users_service: UsersServiceSettings = UsersServiceSettings()\n",
        "    users_service: UsersServiceSettings = UsersServiceSettings()\n"
        "    orders_page_size: int = Field(50, ge=1)\n"
        "    orders_service: OrdersServiceSettings = OrdersServiceSettings()\n",
    )
    service = package / "service.py"
    # The orders module still says `import httpx`: the alias docs/upgrading.md gives, before
    # the team's modules are imported, makes it httpx2 at run time too.
    replace_once(
        service, "from fastapi import FastAPI\n", "import httpx2\nfrom fastapi import FastAPI\n"
    )
    replace_once(
        service,
        "from .users import router as users_router\n",
        "from .users import router as users_router\n\n"
        "httpx2.alias_httpx()  # our modules still say `import httpx`\n\n"
        "from .greetings import router as greetings_router  # noqa: E402\n"
        "from .orders import router as orders_router  # noqa: E402\n",
    )
    replace_once(
        service,
        "    app.include_router(users_router)\n",
        "    app.include_router(users_router)\n"
        "    app.include_router(orders_router)\n"
        "    app.include_router(greetings_router)\n",
    )
    stub_routes = project / "tests/e2e/stub_routes.py"
    stub_routes.write_text(stub_routes.read_text() + STUB_ROUTE)
    users = package / "users.py"
    users.write_text(users.read_text() + "\n\n# ours\n")
    users_tests = project / "tests/test_users.py"
    users_tests.write_text(users_tests.read_text() + "\n\n# The team's note on its tests.\n")
    replace_once(
        project / "pyproject.toml", DEPENDENCY_MARKER, DEPENDENCY_MARKER + '    "anyio>=4",\n'
    )
    (project / "README.md").write_text((project / "README.md").read_text() + README_SECTION)
    (project / ".env.example").write_text((project / ".env.example").read_text() + ENV_LINES)
    runbook = project / "docs/runbook.md"
    runbook.write_text(runbook.read_text() + "\n## Orders\n\nPage the orders team.\n")
    # A team alert, its runbook section, and its PrometheusRule written as the docs say.
    (project / "observability/rules/service.yml").write_text(TEAM_ALERT)
    runbook.write_text(runbook.read_text() + "\n### OrdersSlow\n\nCheck the orders service.\n")
    run(["make", "observability-rules"], cwd=project)


@pytest.fixture(scope="module")
def updated_to_next(
    releases: tuple[Path, list[str]], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, bytes]]:
    repo, _ = releases
    project = copy_project(repo, tmp_path_factory.mktemp("customized") / "svc", CURRENT)
    customize_every_seam(project)
    commit_all(project, "Our service")
    before = project_files(project)
    update_project(project, NEXT)
    return project, before


@pytest.mark.xdist_group("next-release")
def test_next_release_updates_a_customized_service_without_conflicts(
    updated_to_next: tuple[Path, dict[str, bytes]], releases: tuple[Path, list[str]]
) -> None:
    project, before = updated_to_next
    _, changed = releases
    after = check_update(project, before, changed)
    assert b"# A platform setting the next release adds" in after[".env.example"]
    assert b'"uvicorn[standard]>=0.50.0",' in after["pyproject.toml"]
    # The team's edits in the shared files are intact.
    assert after[".env.example"].decode().endswith(ENV_LINES)
    assert after["README.md"].decode().endswith(README_SECTION)
    assert b'    "anyio>=4",\n' in after["pyproject.toml"]


@pytest.mark.xdist_group("next-release")
def test_next_release_customized_service_passes_lint_types_and_tests(
    updated_to_next: tuple[Path, dict[str, bytes]],
) -> None:
    project, _ = updated_to_next
    run(["make", "install"], cwd=project)
    lint = run(["make", "lint"], cwd=project)
    assert "template drift: none" in lint.stdout, lint.stdout + lint.stderr
    typecheck(project)
    result = run(["make", "test"], cwd=project)
    assert "tests/test_orders.py .." in result.stdout, result.stdout
    # The team's alert is still deployed: its PrometheusRule is current and the overlay has it.
    team_rule = project / "deploy/components/servicemonitor/team-rules.yaml"
    written = team_rule.read_bytes()
    run(["make", "observability-rules"], cwd=project)
    assert team_rule.read_bytes() == written
    built = run([*shlex.split(KUBECTL), "kustomize", "deploy/overlays/production"], cwd=project)
    assert "alert: OrdersSlow" in built.stdout
    assert re.search(r"\d+ passed", result.stdout), result.stdout
    # Outside the tests too (the image has no httpx): the team's `import httpx` is httpx2.
    aliased = "import sys, my_service.main; assert sys.modules['httpx'] is sys.modules['httpx2']"
    run([str(project / ".venv/bin/python"), "-c", aliased], cwd=project)
    git(project, "status")  # the tree is readable after the update and the checks
