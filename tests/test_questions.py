"""Bad answers are refused with a message that says what is wrong and what is allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import render

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
