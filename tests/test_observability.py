"""Observability as code: the render's alert rules (checked and unit-tested with promtool), the
PrometheusRule generated from the same source, the dashboard and the alert expressions evaluated
by a real Prometheus scraping a rendered service under load, and the service catalog entry
validated against Backstage's published JSON schema.

Prometheus and promtool are Debian's `prometheus` package: installed here when missing and the
tests run in CI (CI=true) or as root; elsewhere these tests skip, saying why.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.support import (
    ensure_debian_package,
    free_port,
    render,
    run,
    serve,
    stop_process,
    wait_http,
)
from tests.test_deploy import KUBECTL

pytestmark = [pytest.mark.xdist_group("observability"), pytest.mark.render]

PACKAGE = "my_service"
JOB = "my-service"
SCHEMAS = Path(__file__).parent / "schemas" / "backstage"
PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
# Alerts that the load below must trip (their expression returns data now; `for:` aside), and
# the ones a healthy process must not: its pool and file descriptors are far from their limits.
FIRING = {"ErrorBudgetBurnFast", "ErrorBudgetBurnSlow", "DownstreamCircuitOpen"}
SILENT = {"ConnectionPoolSaturated", "FileDescriptorsNearLimit", "FileDescriptorsLeaking"}


@pytest.fixture(scope="module")
def prometheus_tools() -> None:
    ensure_debian_package("prometheus", [PROMETHEUS, PROMTOOL])


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default render, installed (its venv runs the service)."""
    project = render(tmp_path_factory.mktemp("obs") / "svc")
    run(["make", "install"], cwd=project)
    return project


def _rule_groups(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


# --- The rules, their tests and the PrometheusRule -----------------------------------------------


def test_observability_check_passes(project: Path, prometheus_tools: None) -> None:
    result = run(["make", "observability-check"], cwd=project, env={"CI": "true"})
    assert "SUCCESS: 11 rules found" in result.stdout + result.stderr
    assert "Unit Testing:  alerts.test.yml\n  SUCCESS" in result.stdout + result.stderr
    assert "observability-check: OK" in result.stdout


def test_prometheus_rule_has_the_alert_rules(project: Path) -> None:
    alerts = _rule_groups(project / "observability/alerts.yml")
    rule = _rule_groups(project / "deploy/components/servicemonitor/prometheusrule.yaml")
    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["name"] == JOB
    assert rule["spec"] == alerts
    kustomization = _rule_groups(project / "deploy/components/servicemonitor/kustomization.yaml")
    assert "prometheusrule.yaml" in kustomization["resources"]
    names = [r.get("alert") for g in alerts["groups"] for r in g["rules"] if "alert" in r]
    assert set(names) == FIRING | SILENT | {"RetryBudgetExhausted"}
    runbook = (project / "docs/runbook.md").read_text()
    for group in alerts["groups"]:
        for item in group["rules"]:
            if "alert" not in item:
                continue
            name = item["alert"]
            assert item["labels"]["severity"] in {"page", "ticket"}
            assert {"summary", "description", "runbook_url"} <= set(item["annotations"])
            assert item["annotations"]["runbook_url"].endswith(f"docs/runbook.md#{name.lower()}")
            assert f"\n### {name}\n" in runbook


def test_a_drifted_prometheus_rule_or_a_broken_alert_test_fails_the_check(
    tmp_path: Path, project: Path, prometheus_tools: None
) -> None:
    copy = tmp_path / "svc"
    shutil.copytree(project, copy, symlinks=True, ignore=shutil.ignore_patterns(".venv"))
    rule = copy / "deploy/components/servicemonitor/prometheusrule.yaml"
    rule.write_text(rule.read_text().replace("> 0.9", "> 0.95"))
    env = {"CI": "true"}
    with pytest.raises(AssertionError, match="does not have the rule groups"):
        run(["make", "observability-check"], cwd=copy, env=env)
    shutil.copy(project / "deploy/components/servicemonitor/prometheusrule.yaml", rule)
    alerts = copy / "observability/alerts.yml"
    alerts.write_text(alerts.read_text().replace("> 0.9", "> 0.5"))  # pages on a busy pool
    with pytest.raises(AssertionError, match=r"promtool test rules alerts\.test\.yml failed"):
        run(["make", "observability-check"], cwd=copy, env=env)


TEAM_ALERT = """groups:
  - name: my-service-team
    rules:
      - alert: OrdersBacklogGrowing
        expr: vector(1) > 2
        for: 10m
        labels:
          severity: ticket
        annotations:
          summary: The orders backlog grows
          runbook_url: https://git.example.invalid/my-service/blob/main/docs/runbook.md#ordersbackloggrowing
"""


def test_a_team_alert_is_deployed_and_its_runbook_section_checked(
    tmp_path: Path, project: Path, prometheus_tools: None
) -> None:
    copy = tmp_path / "svc"
    shutil.copytree(project, copy, symlinks=True, ignore=shutil.ignore_patterns(".venv"))
    (copy / "observability/rules/service.yml").write_text(TEAM_ALERT)
    env = {"CI": "true"}
    # Until it reaches the PrometheusRule that the overlays deploy, the check fails.
    with pytest.raises(AssertionError, match="run `make observability-rules`"):
        run(["make", "observability-check"], cwd=copy, env=env)
    run(["make", "observability-rules"], cwd=copy, env=env)
    team_rule = _rule_groups(copy / "deploy/components/servicemonitor/team-rules.yaml")
    assert team_rule["metadata"]["name"] == f"{JOB}-team"
    assert team_rule["spec"] == yaml.safe_load(TEAM_ALERT)
    # Its runbook_url must name a section of docs/runbook.md.
    with pytest.raises(
        AssertionError, match=r"OrdersBacklogGrowing: runbook_url .* names no section"
    ):
        run(["make", "observability-check"], cwd=copy, env=env)
    runbook = copy / "docs/runbook.md"
    runbook.write_text(runbook.read_text() + "\n### OrdersBacklogGrowing\n\nCheck the queue.\n")
    assert (
        "observability-check: OK" in run(["make", "observability-check"], cwd=copy, env=env).stdout
    )
    built = run([*shlex.split(KUBECTL), "kustomize", "deploy/overlays/production"], cwd=copy).stdout
    rules = [doc for doc in yaml.safe_load_all(built) if doc and doc["kind"] == "PrometheusRule"]
    assert {rule["metadata"]["name"] for rule in rules} == {JOB, f"{JOB}-team"}
    assert "alert: OrdersBacklogGrowing" in built


# --- A real Prometheus scraping a rendered service ---------------------------------------------


def _api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]


def _query(base: str, expr: str) -> list[Any]:
    data = _api(base, "/api/v1/query", query=expr)
    return list(data["result"])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


@pytest.fixture(scope="module")
def prometheus(project: Path, prometheus_tools: None) -> Iterator[tuple[str, Any]]:
    """The rendered service and its stub downstream, and a Prometheus (1 s scrapes and rule
    evaluations, the render's alerts.yml loaded) scraping it, after some traffic of which part
    failed: (Prometheus's base URL, the running service)."""
    with serve(project, PACKAGE) as service, tempfile.TemporaryDirectory() as data:
        target = service.base_url.removeprefix("http://")
        config = Path(data) / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(project / "observability/alerts.yml")],
                    "scrape_configs": [
                        {"job_name": JOB, "static_configs": [{"targets": [target]}]}
                    ],
                }
            )
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        log = (Path(data) / "prometheus.log").open("wb")
        server = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={Path(data) / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(f"{base}/-/ready", timeout=60)

            def fail_next(calls: int) -> None:
                program = urllib.request.Request(
                    f"{service.stub_url}/_stub/program",
                    data=json.dumps({"fail_next": calls, "status": 503}).encode(),
                    headers={"content-type": "application/json"},
                )
                urllib.request.urlopen(program, timeout=5).close()

            # One early failure (3 attempts, the answer a 5xx): a counter's series appears with
            # its first increment, and rate() sees only the increases after its first scrape.
            fail_next(3)
            assert _get(f"{service.base_url}/users/1") >= 500
            time.sleep(2)
            for _ in range(40):  # healthy traffic
                assert _get(f"{service.base_url}/users/1") == 200
            time.sleep(2)
            fail_next(100)  # the downstream fails: errors, retries, then the breaker opens
            statuses = [_get(f"{service.base_url}/users/1") for _ in range(20)]
            assert all(status >= 500 for status in statuses), statuses
            time.sleep(5)  # a few scrapes and rule evaluations
            yield base, service
        finally:
            stop_process(server)
            log.close()


def _dashboard_queries(project: Path) -> list[tuple[str, str, str]]:
    dashboard = json.loads((project / "observability/dashboard.json").read_text())
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$job", JOB).replace("$__rate_interval", "1m")
            found.append((panel["title"], target["legendFormat"], expr))
    return found


def test_every_dashboard_query_returns_data(project: Path, prometheus: tuple[str, Any]) -> None:
    base, _ = prometheus
    queries = _dashboard_queries(project)
    assert len(queries) >= 12
    empty = [
        (title, legend)
        for title, legend, expr in queries
        # The retry budget never ran out: the breaker opened first (it refuses retries sooner).
        if not _query(base, expr) and "budget exhausted" not in legend
    ]
    assert empty == []
    # The seed's shell checks, as queries: pool in use and idle, file descriptors.
    states = {r["metric"]["state"] for r in _query(base, "http_client_pool_connections")}
    assert states == {"in_use", "idle"}
    open_fds = float(_query(base, f'process_open_fds{{job="{JOB}"}}')[0]["value"][1])
    max_fds = float(_query(base, f'process_max_fds{{job="{JOB}"}}')[0]["value"][1])
    assert 0 < open_fds < max_fds


def test_rules_load_healthy_and_alerts_match_the_traffic(
    project: Path, prometheus: tuple[str, Any]
) -> None:
    base, _ = prometheus
    alerts = _rule_groups(project / "observability/alerts.yml")
    loaded = _api(base, "/api/v1/rules")["groups"]
    assert {g["name"] for g in loaded} == {g["name"] for g in alerts["groups"]}
    unhealthy = [(r["name"], r.get("lastError")) for g in loaded for r in g["rules"]]
    assert len(unhealthy) == sum(len(g["rules"]) for g in alerts["groups"])
    assert [item for item in unhealthy if item[1]] == []
    assert {r["health"] for g in loaded for r in g["rules"]} == {"ok"}

    firing, silent = set(), set()
    for group in alerts["groups"]:
        for item in group["rules"]:
            result = _query(base, item["expr"])  # parses, or _api fails
            if "record" in item:
                assert result, f"{item['record']} has no data"  # the 5xx ratios
            elif result:
                firing.add(item["alert"])
            else:
                silent.add(item["alert"])
    assert firing >= FIRING
    assert silent >= SILENT


# --- The service catalog entry -------------------------------------------------------------------


def _backstage_validator() -> Any:
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    schemas = [json.loads(p.read_text()) for p in sorted(SCHEMAS.glob("*.schema.json"))]
    registry: Registry[Any] = Registry().with_resources(
        (schema["$id"], Resource.from_contents(schema, default_specification=DRAFT7))
        for schema in schemas
    )
    component = next(s for s in schemas if s["$id"] == "ComponentV1alpha1")
    return jsonschema.Draft7Validator(component, registry=registry)


def test_catalog_entry_is_a_valid_backstage_component(project: Path) -> None:
    entity = yaml.safe_load((project / "catalog-info.yaml").read_text())
    validator = _backstage_validator()
    assert list(validator.iter_errors(entity)) == []
    # The schema is strict enough to refuse a broken entry.
    assert list(validator.iter_errors({**entity, "spec": {"type": "service"}}))
    annotations = entity["metadata"]["annotations"]
    base = _rule_groups(project / "deploy/base/kustomization.yaml")
    name_label = base["labels"][0]["pairs"]["app.kubernetes.io/name"]
    assert annotations["backstage.io/kubernetes-label-selector"] == (
        f"app.kubernetes.io/name={name_label}"
    )
    assert f'job="{JOB}"' in annotations["prometheus.io/rule"]
    links = {link["title"]: link["url"] for link in entity["metadata"]["links"]}
    assert links["Runbook"].endswith("/docs/runbook.md")
    assert any(url.endswith("/observability/dashboard.json") for url in links.values())
    assert entity["spec"]["owner"] == "platform-team"


def test_without_metrics_nothing_observability_is_rendered(tmp_path: Path) -> None:
    project = render(tmp_path / "bare", {"include_metrics": False, "owner": "Team Blue"})
    assert not (project / "observability").exists()
    assert not (project / ".github/workflows/observability.yml").exists()
    assert "observability-check" not in (project / "Makefile").read_text()
    entity = yaml.safe_load((project / "catalog-info.yaml").read_text())
    assert "prometheus.io/rule" not in entity["metadata"]["annotations"]
    assert entity["spec"]["owner"] == "team-blue"
    assert list(_backstage_validator().iter_errors(entity)) == []
