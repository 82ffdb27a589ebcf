"""Fixtures for the template tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

if shutil.which("uv") is None:  # pragma: no cover - the Makefile puts uv on PATH
    pytest.exit("uv is not on PATH: run the tests with `make test`", returncode=2)

os.environ.setdefault("UV_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".cache/uv"))
