"""The httpx -> httpx2 codemod (hooks/migrations/v0_3_0_httpx2.py): what it renames, what it
leaves, that it is idempotent, that lines stay within the line length, and that the template
itself has nothing left to move."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from harness.support import REPO_ROOT

SCRIPT = REPO_ROOT / "hooks/migrations/v0_3_0_httpx2.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("v0_3_0_httpx2", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


codemod = _load()

TEAM_MODULE = '''"""Calls the orders service with ``httpx.AsyncClient`` (the shared one)."""

from __future__ import annotations

import httpx
import httpx as hx
import respx
from foo import httpx as not_ours
from httpx import HTTPStatusError, Response

LOGGERS = ("httpx", "httpx.client")  # see httpx.Client; https://www.python-httpx.org/a.b
TRANSPORT = "httpx"
PATCHED = "httpx.AsyncClient.send"


async def fetch(client: httpx.AsyncClient, other: object) -> Response:
    try:
        return await client.get(f"/orders?v={httpx.__version__}")
    except (httpx.HTTPError, hx.ConnectError, HTTPStatusError):
        print(other.httpx, httpx, respx)
        raise
'''

TEAM_MODULE_MOVED = '''"""Calls the orders service with ``httpx2.AsyncClient`` (the shared one)."""

from __future__ import annotations

import httpx2
import httpx2 as hx
import respx
from foo import httpx as not_ours
from httpx2 import HTTPStatusError, Response

LOGGERS = ("httpx", "httpx2.client")  # see httpx2.Client; https://www.python-httpx.org/a.b
TRANSPORT = "httpx"
PATCHED = "httpx2.AsyncClient.send"


async def fetch(client: httpx2.AsyncClient, other: object) -> Response:
    try:
        return await client.get(f"/orders?v={httpx2.__version__}")
    except (httpx2.HTTPError, hx.ConnectError, HTTPStatusError):
        print(other.httpx, httpx2, respx)
        raise
'''


def test_imports_uses_and_dotted_names_move_and_the_rest_stays() -> None:
    moved, kept_code = codemod.convert(TEAM_MODULE, 100)
    assert (moved, kept_code) == (TEAM_MODULE_MOVED, False)


def test_it_is_idempotent() -> None:
    once, _ = codemod.convert(TEAM_MODULE, 100)
    assert codemod.convert(once, 100) == (once, False)


def test_httpcore_moves_too_and_an_unrelated_file_is_left_alone() -> None:
    source = "from httpcore import AsyncConnectionPool\nimport httpcore\n\nx = httpcore.URL\n"
    moved, _ = codemod.convert(source, 100)
    assert (
        moved
        == "from httpcore2 import AsyncConnectionPool\nimport httpcore2\n\nx = httpcore2.URL\n"
    )
    unrelated = '"""Uses respx and pytest_httpx., not the module."""\nimport respx\n'
    assert codemod.convert(unrelated, 100) == (unrelated, False)


def test_a_comment_or_docstring_line_that_grows_past_the_limit_is_wrapped() -> None:
    words = "word " * 17
    source = (
        f'import httpx\n\n\ndef f() -> None:\n    """{words}and httpx.Response here.\n\n'
        f'    More.\n    """\n    # {words}see httpx.Response, it is\n'
    )
    moved, kept_code = codemod.convert(source, 100)
    assert not kept_code
    assert all(len(line) <= 100 for line in moved.splitlines()), moved
    assert "httpx2.Response" in moved
    assert moved.count("\n") == source.count("\n") + 2
    assert "    # it is\n" in moved or "\n    # " in moved.split("# word", 1)[1]


def test_code_that_would_grow_past_the_limit_keeps_its_names_under_the_old_alias() -> None:
    call = "    return some_long_function_name(argument_one, argument_two, httpx.Response(2))"
    call = call.replace("argument_two", "argument_two_longer_by_fifteen_")
    assert len(call) == 100
    source = f"import httpx\nfrom httpx import URL\n\n\ndef f():\n{call}\n"
    moved, kept_code = codemod.convert(source, 100)
    assert kept_code
    assert moved == source.replace("import httpx\n", "import httpx2 as httpx\n", 1).replace(
        "from httpx import", "from httpx2 import"
    )
    assert codemod.convert(moved, 100) == (moved, False)


def test_a_file_that_imported_both_keeps_one_import() -> None:
    source = "import httpx\nimport httpx2\n\nx = (httpx.URL, httpx2.URL)\n"
    assert codemod.convert(source, 100)[0] == "import httpx2\n\nx = (httpx2.URL, httpx2.URL)\n"


def test_cli_converts_python_sources_and_templates_and_reads_the_line_length(
    tmp_path: Path,
) -> None:
    (tmp_path / "pyproject.toml.jinja").write_text("[tool.ruff]\nline-length = 60\n")
    conditional = tmp_path / "src/{% if include_example_client %}users.py{% endif %}"
    conditional.parent.mkdir()
    conditional.write_text("import httpx\n\nR = httpx.Response\n")
    jinja = tmp_path / "tests/test_x.py.jinja"
    jinja.parent.mkdir()
    jinja.write_text(
        "import httpx\n\nfrom {{ package_name }}.x import y  {# httpx.URL #}\n"
        "{% if include_metrics %}\nZ = httpx.URL\n{% endif %}\n"
    )
    skipped = tmp_path / ".venv/lib/httpx_user.py"
    skipped.parent.mkdir(parents=True)
    skipped.write_text("import httpx\n")
    notes = tmp_path / "notes.md"
    notes.write_text("import httpx\n")
    check = [sys.executable, str(SCRIPT), "--check", str(tmp_path)]
    assert subprocess.run(check, capture_output=True, check=False).returncode == 1
    subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], check=True, capture_output=True)
    assert conditional.read_text() == "import httpx2\n\nR = httpx2.Response\n"
    assert jinja.read_text() == (
        "import httpx2\n\nfrom {{ package_name }}.x import y  {# httpx2.URL #}\n"
        "{% if include_metrics %}\nZ = httpx2.URL\n{% endif %}\n"
    )
    assert skipped.read_text() == notes.read_text() == "import httpx\n"
    assert codemod.line_length(conditional) == 60
    result = subprocess.run(check, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
    assert "nothing to change" in result.stdout


def test_a_path_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "no such file or directory" in result.stderr


@pytest.mark.parametrize("tree", ["template", "includes"])
def test_the_template_has_no_httpx_left_to_move(tree: str) -> None:
    """The template's own sources are on httpx2: the codemod finds nothing to change there."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", str(REPO_ROOT / tree)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
