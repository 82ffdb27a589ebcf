# /// script
# requires-python = ">=3.11"
# dependencies = ["pyyaml>=6"]
# ///
"""`make observability-check`: the alert rules, their unit tests and the dashboard, offline.

1. `promtool check rules` on observability/alerts.yml and every file in observability/rules/.
2. `promtool test rules observability/alerts.test.yml`: every alert fires on series that should
   page and stays silent on series that should not.
3. The PrometheusRules in deploy/components/servicemonitor (when deploy/ exists): the
   template's has exactly the rule groups of observability/alerts.yml, and the team's
   (team-rules.yaml) exactly those of observability/rules/*.yml, so the overlays deploy every
   rule that was checked. `make observability-rules` (this script with --write-team-rules)
   writes the team's from those files.
4. Every alert's runbook_url that points into docs/runbook.md names one of its sections.
5. observability/dashboard.json is a dashboard whose every query reads the `${datasource}`
   variable, so it imports into any Grafana.

promtool is Prometheus's own tool (PROMTOOL picks another command). Without it this says how to
get it and stops: with an error in CI (CI=true), else with a notice, so that `make check` still
works on a laptop without Prometheus tools.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
TEAM_RULE = PROMETHEUS_RULE.with_name("team-rules.yaml")
TEAM_RULE_HEADER = """\
# Your rules (observability/rules/*.yml) for the Prometheus Operator: yours, never changed by
# `make update`. Written by `make observability-rules` from those files; `make
# observability-check` fails while it differs from them. Edit the rules there, not here.
"""
RUNBOOK = ROOT / "docs/runbook.md"
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


def team_rule_files() -> list[Path]:
    return sorted(HERE.glob("rules/*.y*ml"))


def team_rule() -> dict[str, Any]:
    """The team's PrometheusRule: the groups of every file in observability/rules/, in order."""
    groups = []
    for path in team_rule_files():
        groups += (yaml.safe_load(path.read_text()) or {}).get("groups") or []
    template_rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    return {
        "apiVersion": template_rule["apiVersion"],
        "kind": "PrometheusRule",
        "metadata": {"name": f"{template_rule['metadata']['name']}-team"},
        "spec": {"groups": groups},
    }


def write_team_rule() -> None:
    TEAM_RULE.write_text(TEAM_RULE_HEADER + yaml.safe_dump(team_rule(), sort_keys=False))
    print(f"wrote {TEAM_RULE.relative_to(ROOT)} from observability/rules/")


def check_team_rule() -> None:
    if not PROMETHEUS_RULE.exists():
        return
    name = TEAM_RULE.relative_to(ROOT)
    if not TEAM_RULE.exists() or yaml.safe_load(TEAM_RULE.read_text()) != team_rule():
        fail(
            f"{name} does not have the rule groups of observability/rules/, so the overlays "
            "would not deploy them: run `make observability-rules` and commit it"
        )
    print(f"{name}: the same {len(team_rule()['spec']['groups'])} groups as observability/rules/")


def anchor(heading: str) -> str:
    """The anchor a Markdown heading gets (GitHub's and GitLab's rule): lower case, spaces to
    hyphens, other punctuation dropped."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def check_runbook_anchors() -> None:
    if not RUNBOOK.exists():
        fail("docs/runbook.md is missing: every alert's runbook_url points into it")
    text = RUNBOOK.read_text()
    anchors = {anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    problems = []
    for path in [HERE / "alerts.yml", *team_rule_files()]:
        for group in (yaml.safe_load(path.read_text()) or {}).get("groups") or []:
            for rule in group.get("rules") or []:
                url = (rule.get("annotations") or {}).get("runbook_url", "")
                if "alert" not in rule or "docs/runbook.md" not in url:
                    continue
                _, _, section = url.partition("#")
                if section not in anchors:
                    problems.append(
                        f"{path.relative_to(ROOT)}: {rule['alert']}: runbook_url {url} names no "
                        "section of docs/runbook.md (add a heading of that name)"
                    )
    if problems:
        fail("\n".join(problems))
    print("runbook_url: every alert's section is in docs/runbook.md")


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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-team-rules", action="store_true", help=f"write {TEAM_RULE.name}")
    if parser.parse_args().write_team_rules:
        if not PROMETHEUS_RULE.exists():
            fail("no deploy/components/servicemonitor here: nothing to write")
        write_team_rule()
        return
    command = promtool()
    team_rules = [str(path.relative_to(HERE)) for path in team_rule_files()]
    rule_files = ["alerts.yml", *team_rules]
    run([*command, "check", "rules", *rule_files])
    run([*command, "test", "rules", "alerts.test.yml"])
    check_prometheus_rule()
    check_team_rule()
    check_runbook_anchors()
    check_dashboard()
    print("observability-check: OK")


if __name__ == "__main__":
    main()
