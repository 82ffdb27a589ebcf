# /// script
# requires-python = ">=3.11"
# dependencies = ["pyyaml>=6"]
# ///
"""`make observability-check`: the alert rules, their unit tests and the dashboard, offline.

1. `promtool check rules` on observability/alerts.yml and every file in observability/rules/.
2. `promtool test rules observability/alerts.test.yml`: every alert fires on series that should
   page and stays silent on series that should not.
3. The PrometheusRule in deploy/components/servicemonitor (when deploy/ exists) has exactly the
   rule groups of observability/alerts.yml.
4. observability/dashboard.json is a dashboard whose every query reads the `${datasource}`
   variable, so it imports into any Grafana.

promtool is Prometheus's own tool (PROMTOOL picks another command). Without it this says how to
get it and stops: with an error in CI (CI=true), else with a notice, so that `make check` still
works on a laptop without Prometheus tools.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "observability"
DATASOURCE = "${datasource}"
PROMETHEUS_RULE = ROOT / "deploy/components/servicemonitor/prometheusrule.yaml"
HOW_TO_GET_PROMTOOL = """promtool was not found. It ships with Prometheus:
  Debian/Ubuntu: apt-get install prometheus   (promtool is /usr/bin/promtool)
  macOS:         brew install prometheus
  elsewhere:     the release archive for your platform, https://prometheus.io/download/
                 (promtool is next to the prometheus binary; put it on PATH or set PROMTOOL)"""


def fail(message: str) -> None:
    print(f"observability-check: {message}", file=sys.stderr)
    sys.exit(1)


def promtool() -> list[str]:
    command = shlex.split(os.environ.get("PROMTOOL") or "promtool")
    if shutil.which(command[0]) is None:
        if os.environ.get("CI", "").lower() == "true":
            fail(HOW_TO_GET_PROMTOOL + "\nCI=true: the check is required here.")
        print(HOW_TO_GET_PROMTOOL + "\nSkipping the observability check.", file=sys.stderr)
        sys.exit(0)
    return command


def run(command: list[str]) -> None:
    print("+ " + shlex.join(command), flush=True)
    if subprocess.run(command, cwd=HERE, check=False).returncode != 0:  # noqa: S603 - our argv
        fail(f"{shlex.join(command)} failed (see above)")


def check_prometheus_rule() -> None:
    if not PROMETHEUS_RULE.exists():
        return
    alerts = yaml.safe_load((HERE / "alerts.yml").read_text())
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    if rule.get("kind") != "PrometheusRule" or rule.get("spec") != alerts:
        fail(
            f"{PROMETHEUS_RULE.relative_to(ROOT)} does not have the rule groups of "
            "observability/alerts.yml: both render from the template, do not edit either"
        )
    print(f"{PROMETHEUS_RULE.relative_to(ROOT)}: the same {len(alerts['groups'])} groups")


def queries(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for panel in dashboard.get("panels", []):
        for inner in [panel, *panel.get("panels", [])]:
            found += [(inner["title"], target) for target in inner.get("targets", [])]
    return found


def check_dashboard() -> None:
    dashboard = json.loads((HERE / "dashboard.json").read_text())
    variables = {item["name"] for item in dashboard["templating"]["list"]}
    if not {"datasource", "job"} <= variables:
        fail("dashboard.json needs the `datasource` and `job` template variables")
    found = queries(dashboard)
    if not found:
        fail("dashboard.json has no queries")
    for title, target in found:
        if target.get("datasource", {}).get("uid") != DATASOURCE or not target.get("expr"):
            fail(f"dashboard.json, panel {title!r}: each query needs an expr and {DATASOURCE}")
    print(f"dashboard.json: {len(found)} queries, all on {DATASOURCE}")


def main() -> None:
    command = promtool()
    team_rules = sorted(str(path.relative_to(HERE)) for path in HERE.glob("rules/*.y*ml"))
    rule_files = ["alerts.yml", *team_rules]
    run([*command, "check", "rules", *rule_files])
    run([*command, "test", "rules", "alerts.test.yml"])
    check_prometheus_rule()
    check_dashboard()
    print("observability-check: OK")


if __name__ == "__main__":
    main()
