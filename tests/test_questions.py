"""Bad answers are refused with a message that says what is wrong and what is allowed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import copier
import pytest

from harness.support import render

pytestmark = pytest.mark.render

BAD_ANSWERS: list[tuple[dict[str, Any], str]] = [
    ({"service_name": "Orders"}, "is not a DNS label"),
    ({"service_name": "orders_api"}, "is not a DNS label"),
    ({"service_name": "-orders"}, "is not a DNS label"),
    ({"service_name": "orders-"}, "is not a DNS label"),
    ({"service_name": "9orders"}, "is not a DNS label"),
    ({"service_name": "a" * 64}, "is not a DNS label"),
    ({"service_name": ""}, "is not a DNS label"),
    ({"package_name": "orders-api"}, "is not a valid package name"),
    ({"package_name": "1orders"}, "is not a valid package name"),
    ({"package_name": "Orders"}, "is not a valid package name"),
    ({"package_name": "class"}, "is a Python keyword"),
    ({"package_name": "import"}, "is a Python keyword"),
    ({"package_name": "asyncio"}, "would shadow the standard library"),
    ({"package_name": "logging"}, "would shadow the standard library"),
    ({"package_name": "json"}, "would shadow the standard library"),
    ({"service_name": "email"}, "would shadow the standard library"),
    ({"service_name": "test"}, "would collide with the standard library's test package"),
    ({"service_name": "tests"}, "would collide with the service's tests/ package"),
    ({"package_name": "tests"}, "so the service's tests could not import it"),
    ({"package_name": "httpx"}, "would shadow the service's own dependency"),
    ({"package_name": "fastapi"}, "would shadow the service's own dependency"),
    ({"description": "   "}, "must not be empty"),
    ({"description": "x" * 201}, "keep it to 200 or fewer"),
    ({"description": "two\nlines"}, "must be a single line"),
    ({"owner": ""}, "is not a valid owner"),
    ({"owner": "team; rm -rf /"}, "is not a valid owner"),
    ({"http_port": "80"}, "out of range"),
    ({"http_port": "1023"}, "out of range"),
    ({"http_port": "65536"}, "out of range"),
    ({"http_port": "http"}, "is not a port number"),
    ({"http_port": "-1"}, "is not a port number"),
    ({"ci_provider": "jenkins"}, "Invalid choice"),
    ({"deploy": "helm"}, "Invalid choice"),
    ({"python_version": "3.10"}, "'3.10' is not in ['3.11', '3.12', '3.13', '3.14', '3.15']"),
    ({"python_version": "3.16"}, "'3.16' is not in ['3.11', '3.12', '3.13', '3.14', '3.15']"),
    ({"python_version": "py314"}, "'py314' is not in ['3.11', '3.12', '3.13', '3.14', '3.15']"),
    ({"slo_availability": "99.9%"}, "is not an availability objective"),
    ({"slo_availability": "100"}, "is not an availability objective"),
    ({"slo_availability": "85"}, "is out of range"),
    ({"repository_url": "github.com/acme/orders"}, "is not a web address"),
    ({"repository_url": "https://github.com/acme/orders/"}, "is not a web address"),
]


@pytest.mark.parametrize(("answers", "message"), BAD_ANSWERS, ids=lambda v: repr(v)[:40])
def test_bad_answer_is_refused(tmp_path: Path, answers: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=r"Validation error|Invalid choice") as refused:
        render(tmp_path / "svc", answers)
    assert message in str(refused.value)
    assert not (tmp_path / "svc" / "pyproject.toml").exists()


@pytest.mark.parametrize("port", ["1024", "8080", "65535"])
def test_port_bounds_are_accepted(tmp_path: Path, port: str) -> None:
    project = render(tmp_path / "svc", {"http_port": port})
    assert f"EXPOSE {port}" in (project / "Dockerfile").read_text()


@pytest.mark.filterwarnings("ignore::copier.errors.DirtyLocalWarning")
def test_message_after_copy_says_what_each_target_does(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The next steps printed after `copier copy` name real targets, and say of each what its
    recipe in the rendered Makefile runs: `make test` is pytest only, `make check` adds lint and
    types."""
    copier.run_copy(
        str(Path(__file__).resolve().parent.parent),
        str(tmp_path / "svc"),
        data={"service_name": "my-service"},
        defaults=True,
        unsafe=True,
        vcs_ref="HEAD",
        quiet=False,
    )
    printed = capfd.readouterr().err
    steps = dict(re.findall(r"^\s+make (\S+)\s+# (.+)$", printed, re.MULTILINE))
    assert {"install", "test", "check", "run"} <= steps.keys(), printed
    makefile = (tmp_path / "svc" / "Makefile").read_text()
    recipes = dict(re.findall(r"^([a-z-]+):.*?\n((?:\t.*\n)*)", makefile, re.MULTILINE))
    assert "pytest" in recipes["test"] and "ruff" not in recipes["test"]
    assert not re.search(r"\blint|\btypes?\b|mypy", steps["test"]), steps["test"]
    assert re.search(r"^check: lint typecheck test\b", makefile, re.MULTILINE)
    assert all(word in steps["check"] for word in ("lint", "types", "tests")), steps["check"]
