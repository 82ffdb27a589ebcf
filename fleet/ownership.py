"""The render's ownership map (``.template-ownership.yml``): which files the template owns.

Drift is only meaningful for template-owned files: team-owned files are the team's by design and
shared files are merged by Copier on every update, so neither is ever drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import yaml

MAP_FILE = ".template-ownership.yml"
KINDS = ("template_owned", "team_owned", "shared")


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    """Translate a glob into a regex over ``"/" + path``.

    A ``**`` segment matches zero or more whole segments; ``*`` and ``?`` never cross ``/``;
    dot-files are ordinary names (the semantics of wcmatch's GLOBSTAR | DOTGLOB), so the map
    needs no dependency beyond PyYAML.
    """
    regex = ""
    for segment in pattern.strip("/").split("/"):
        regex += "(?:/[^/]+)*" if segment == "**" else "/" + _segment(segment)
    return re.compile(regex + r"\Z")


def _segment(segment: str) -> str:
    out, i = "", 0
    while i < len(segment):
        char = segment[i]
        end = _class_end(segment, i) if char == "[" else -1
        if char == "*":
            out += "[^/]*"
        elif char == "?":
            out += "[^/]"
        elif end != -1:
            body = segment[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out += "[" + body.replace("\\", "\\\\") + "]"
            i = end
        else:
            out += re.escape(char)
        i += 1
    return out


def _class_end(segment: str, start: int) -> int:
    """Where the character class opened at ``start`` closes (-1: a literal ``[``). A ``]``
    right after ``[`` or ``[!`` belongs to the class."""
    first = start + 2 if segment[start + 1 : start + 2] == "!" else start + 1
    return segment.find("]", first + 1)


def globmatch(path: str, pattern: str) -> bool:
    """Whether the POSIX relative ``path`` matches the glob ``pattern``."""
    return _compile(pattern).match("/" + path.strip("/")) is not None


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
