"""The environment a service's own make runs in."""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["without_make_variables"]

_MAKE_OWN = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")
# GNU make puts the variables given on its command line after " -- " in MAKEFLAGS.
_OVERRIDE = re.compile(r"(?:^|(?<=\s))([A-Za-z_][A-Za-z0-9_]*)=")


def without_make_variables(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without what an outer make hands down: its own variables and those given on
    its command line (``make test PYTEST_ARGS=...`` exports them to every child), which a
    service's make would otherwise take as its own."""
    _, _, overrides = environ.get("MAKEFLAGS", "").partition(" -- ")
    outer = set(_MAKE_OWN) | set(_OVERRIDE.findall(overrides))
    return {name: value for name, value in environ.items() if name not in outer}
