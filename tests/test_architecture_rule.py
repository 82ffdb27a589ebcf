"""The seed's Architecture Rule is enforced by lint: a route that builds its own HTTP client
(httpx2's, httpx's or aiohttp's) fails `make lint` in a render, with a message that points to the
shared client."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.support import render, run

pytestmark = pytest.mark.render

ROGUE_ROUTE = '''\
"""A route that ignores the shared client: the anti-pattern the seed warns about."""

import httpx2
from fastapi import APIRouter

router = APIRouter()


@router.get("/rogue")
async def rogue() -> dict[str, int]:
    async with httpx2.AsyncClient() as client:
        response = await client.get("http://users-api:8000/users/1")
    return {"status": response.status_code}
'''

SYNC_ROGUE = '''\
"""Same anti-pattern, sync client, imported by name."""

from httpx2 import Client


def fetch() -> int:
    with Client() as client:
        return client.get("http://users-api:8000/users/1").status_code
'''

AIOHTTP_ROGUE = '''\
"""Same anti-pattern with aiohttp: a session (and pool) per call."""

import aiohttp


async def fetch() -> int:
    async with aiohttp.ClientSession() as session:
        async with session.get("http://users-api:8000/users/1") as response:
            return response.status
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = render(tmp_path_factory.mktemp("rule") / "service")
    run(["make", "install"], cwd=project)
    run(["make", "lint"], cwd=project)  # clean before the rogue file arrives
    return project


@pytest.mark.parametrize(
    ("source", "banned"),
    [
        (ROGUE_ROUTE, "httpx2.AsyncClient"),
        (SYNC_ROGUE, "httpx2.Client"),
        # Code that still imports httpx (httpx2.alias_httpx() makes it httpx2) is held to it too.
        (ROGUE_ROUTE.replace("httpx2", "httpx"), "httpx.AsyncClient"),
        (SYNC_ROGUE.replace("httpx2", "httpx"), "httpx.Client"),
        (AIOHTTP_ROGUE, "aiohttp.ClientSession"),
    ],
)
def test_own_client_fails_lint(project: Path, source: str, banned: str) -> None:
    rogue = project / "src/my_service/rogue.py"
    rogue.write_text(source)
    try:
        result = subprocess.run(
            ["make", "lint"], cwd=project, capture_output=True, text=True, check=False
        )
    finally:
        rogue.unlink()
    assert result.returncode != 0
    assert "TID251" in result.stdout
    assert f"`{banned}` is banned" in result.stdout
    assert "Depends(get_http_client)" in result.stdout
    assert "rogue.py" in result.stdout


def test_client_and_pool_modules_are_the_exceptions(project: Path) -> None:
    # They name the banned classes (the shared client subclasses httpx2.AsyncClient, the pool
    # beneath it opens an aiohttp.ClientSession, on its one line exempted), and lint passes.
    assert "(httpx2.AsyncClient)" in (project / "src/my_service/core/http_client.py").read_text()
    pool = (project / "src/my_service/core/pool.py").read_text()
    assert "= aiohttp.ClientSession  # noqa: TID251" in pool
    run(["make", "lint"], cwd=project)


def test_the_pool_module_is_no_exception_for_httpx_clients(project: Path) -> None:
    pool = project / "src/my_service/core/pool.py"
    original = pool.read_text()
    pool.write_text(original + "\n\nROGUE = httpx2.AsyncClient\n")
    try:
        result = subprocess.run(
            ["make", "lint"], cwd=project, capture_output=True, text=True, check=False
        )
    finally:
        pool.write_text(original)
    assert result.returncode != 0
    assert "`httpx2.AsyncClient` is banned" in result.stdout
