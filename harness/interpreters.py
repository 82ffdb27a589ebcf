"""The Python interpreters the template tests run renders under: one per `python_version` choice
in copier.yml, found on this machine, never downloaded.

A render picks its interpreter itself, as it does for its developers: `uv` reads the render's
`.python-version` and looks on PATH for a `pythonX.Y`. The tests put a directory of
`pythonX.Y` links to the interpreters found here at the front of PATH (`interpreter_dir`), so
every `make install` in a render, whatever test runs it, gets the version that render asked for.

Where an interpreter is looked for, first found wins:
1. ``TEMPLATE_TEST_PYTHON_3_13`` (one variable per version, dots as underscores): a path;
2. ``python3.13`` on PATH, if it really runs 3.13 (a pyenv shim for a version that is not
   activated does not);
3. pyenv's versions folder (``$PYENV_ROOT``, else ``~/.pyenv``): the newest ``3.13.*`` there;
4. the Debian trees that ``tests/docker/rootfs.sh`` builds (``make test`` runs it first) in
   ``$TEMPLATE_ROOTFS_CACHE``, else ``/var/cache/fastapi-template``: their ``usr/host-bin``
   entry points run Debian's own interpreters on this host (forky's 3.14 and 3.15).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from harness.support import REPO_ROOT, run

_QUESTION: dict[str, Any] = yaml.safe_load((REPO_ROOT / "copier.yml").read_text())["python_version"]
PYTHON_VERSIONS: tuple[str, ...] = tuple(str(choice) for choice in _QUESTION["choices"])
DEFAULT_PYTHON_VERSION = str(_QUESTION["default"])


def base_image(version: str) -> str:
    """The image a render on ``version`` builds on: the ``base_image`` macro of
    includes/python.jinja, which the render's Dockerfile names in its FROM lines."""
    import jinja2

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(REPO_ROOT))
    return str(environment.get_template("includes/python.jinja").module.base_image(version))


def override_variable(version: str) -> str:
    """The environment variable that names the interpreter for ``version`` explicitly."""
    return "TEMPLATE_TEST_PYTHON_" + version.replace(".", "_")


# Arguments that make a python print its major.minor version, e.g. 3.13.
PRINT_VERSION = ["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]


def reported_version(python: list[str], cwd: Path) -> str:
    """The major.minor version that ``python`` (a command: a venv's python, a `docker run`)
    reports."""
    return run([*python, *PRINT_VERSION], cwd=cwd).stdout.strip()


def runs_version(executable: Path | str, version: str) -> bool:
    """Whether ``executable`` starts and is Python ``version`` (shims may exist and fail)."""
    try:
        result = subprocess.run(
            [str(executable), *PRINT_VERSION],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except OSError:
        return False
    return result.returncode == 0 and result.stdout.strip() == version


def _patch_level(folder: Path) -> tuple[int, ...]:
    """Sort key of a pyenv version folder name such as ``3.13.0`` (pre-releases sort first)."""
    return tuple(int(part) for part in re.findall(r"\d+", folder.name))


def _pyenv_candidates(version: str) -> list[Path]:
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    folders = sorted((root / "versions").glob(f"{version}.*"), key=_patch_level, reverse=True)
    return [folder / "bin" / f"python{version}" for folder in folders]


def _debian_candidates(version: str) -> list[Path]:
    cache = Path(os.environ.get("TEMPLATE_ROOTFS_CACHE") or "/var/cache/fastapi-template")
    return sorted(cache.glob(f"debian-*/usr/host-bin/python{version}"))


def find_interpreter(version: str) -> Path | None:
    """The interpreter for ``version`` on this machine (see the module docstring), or None."""
    override = os.environ.get(override_variable(version))
    if override:
        if not runs_version(override, version):
            raise RuntimeError(
                f"{override_variable(version)}={override} does not run Python {version}"
            )
        return Path(override)
    on_path = shutil.which(f"python{version}")
    candidates = [
        *([Path(on_path)] if on_path else []),
        *_pyenv_candidates(version),
        *_debian_candidates(version),
    ]
    return next((path for path in candidates if runs_version(path, version)), None)


def interpreter_dir(directory: Path, interpreters: dict[str, Path]) -> Path:
    """Fill ``directory`` with a ``pythonX.Y`` link per interpreter and return it, for PATH."""
    directory.mkdir(parents=True, exist_ok=True)
    for version, executable in interpreters.items():
        link = directory / f"python{version}"
        link.unlink(missing_ok=True)
        link.symlink_to(executable)
    return directory


def missing_message(versions: list[str]) -> str:
    """What to do when interpreters are missing: where they were looked for, how to name them."""
    listed = ", ".join(versions)
    variables = ", ".join(override_variable(version) for version in versions)
    return (
        f"No Python {listed} found for the template tests (looked for pythonX.Y on PATH, in "
        "pyenv's versions folder and in the Debian trees of tests/docker/rootfs.sh). Build the "
        "Debian tree (`bash tests/docker/rootfs.sh` as root: forky's 3.14 and 3.15; `make test` "
        f"runs it), install them (for example `pyenv install {versions[0]}`) or name them with "
        f"{variables}."
    )


def put_found_on_path() -> dict[str, Path]:
    """Put a ``pythonX.Y`` link to every interpreter found here first on this process's PATH,
    so every render it makes (and their ``uv``) finds the version it asks for without a
    download; return the interpreters found. The tests, ``make bench`` and ``make reference``
    render services, and call this once."""
    found = {version: path for version in PYTHON_VERSIONS if (path := find_interpreter(version))}
    links = Path(tempfile.mkdtemp(prefix="template-pythons-"))
    atexit.register(shutil.rmtree, links, ignore_errors=True)
    os.environ["PATH"] = f"{interpreter_dir(links, found)}{os.pathsep}{os.environ['PATH']}"
    return found
