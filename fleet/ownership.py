"""The render's ownership map (``.template-ownership.yml``): which files the template owns.

Drift is only meaningful for template-owned files: team-owned files are the team's by design and
shared files are merged by Copier on every update, so neither is ever drift.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import yaml

RENDER_TOOL = Path(__file__).resolve().parent.parent / "template/tools/ownership.py"
MAP_FILE = ".template-ownership.yml"
KINDS = ("template_owned", "team_owned", "shared")


def _render_tool() -> ModuleType:
    """The ownership tool every render ships (``template/tools/ownership.py``): its glob
    matcher is the one the render's ``make lint`` uses, so both classify a path alike."""
    spec = importlib.util.spec_from_file_location("_render_ownership", RENDER_TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


RENDER_OWNERSHIP = _render_tool()
globmatch: Callable[[str, str], bool] = RENDER_OWNERSHIP.matches
"""Whether the POSIX relative ``path`` matches the glob ``pattern``."""


@dataclass(frozen=True)
class Ownership:
    """The three lists of a map, in the map's own order."""

    template_owned: tuple[str, ...] = ()
    team_owned: tuple[str, ...] = ()
    shared: tuple[str, ...] = ()

    def owners(self, path: str) -> list[str]:
        """Every list (``template_owned``, ``team_owned``, ``shared``) that ``path`` matches."""
        return [kind for kind in KINDS if any(globmatch(path, p) for p in getattr(self, kind))]


def parse(text: str) -> Ownership:
    """Read a map; raise ``ValueError`` saying what is wrong with it."""
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{MAP_FILE} is not a mapping")
    lists: dict[str, tuple[str, ...]] = {}
    for kind in KINDS:
        value = data.get(kind) or []
        if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
            raise ValueError(f"{MAP_FILE}: {kind} must be a list of glob patterns")
        lists[kind] = tuple(value)
    return Ownership(lists["template_owned"], lists["team_owned"], lists["shared"])
