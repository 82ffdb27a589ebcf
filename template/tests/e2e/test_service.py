"""The service in its container, over real sockets: how it runs, whatever routes it has."""

from __future__ import annotations

import json
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


@needs_containers
def test_the_image_carries_the_sbom_of_what_it_installed(stack: Stack) -> None:
    """/app/sbom.cdx.json (CycloneDX, from uv.lock) names every package the image's virtual
    environment holds, at the version installed: what a scanner reads is what runs."""
    container: Any = stack.service.get_wrapped_container()
    compare = (
        "import json, importlib.metadata as m, re\n"
        "norm = lambda name: re.sub(r'[-_.]+', '-', name).lower()\n"
        "bom = json.load(open('/app/sbom.cdx.json'))\n"
        "listed = {(norm(c['name']), c['version']) for c in bom['components']}\n"
        "root = norm(bom['metadata']['component']['name'])  # the service itself\n"
        "installed = {(norm(d.metadata['Name']), d.version) for d in m.distributions()}\n"
        "installed = {(name, version) for name, version in installed if name != root}\n"
        "print(json.dumps({'format': bom['bomFormat'], 'spec': bom['specVersion'],\n"
        "    'missing': sorted(map(list, installed - listed)), 'count': len(installed)}))\n"
    )
    exit_code, output = container.exec_run(["python3", "-c", compare])
    assert exit_code == 0, output
    report = json.loads(output)
    assert (report["format"], report["spec"]) == ("CycloneDX", "1.5"), report
    assert report["count"] > 20, report  # the service's venv, not the base image's Python
    assert report["missing"] == [], report
