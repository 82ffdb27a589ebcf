"""Who owns which file, and which template-owned files were edited here (template drift).

Template-owned (see ``.template-ownership.yml``). ``make lint`` runs ``drift``; run it yourself:

    uv run python tools/ownership.py drift          # report drift
    uv run python tools/ownership.py owner PATH...  # who owns PATH

Drift is measured against what the template renders for this service's recorded version
(``_commit`` in ``.copier-answers.yml``) and answers: Copier renders that version into a
temporary directory, and every template-owned file that differs here is ``modified`` or
``deleted``. An edit there is overwritten or conflicts on the next ``copier update``; each
finding names the extension point to use instead.

Drift is reported as a warning. ``TEMPLATE_DRIFT=error`` (or ``--strict``) makes it a failure:
a platform team sets that once, e.g. as an organisation-wide CI variable.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MAP_FILE = ".template-ownership.yml"
ANSWERS_FILE = ".copier-answers.yml"
KINDS = ("template_owned", "team_owned", "shared")

# What to do instead of editing a template-owned file, by the first pattern that matches.
EXTENSION_POINTS: tuple[tuple[str, str], ...] = (
    (
        "src/*/core/settings.py",
        "add settings to Settings in settings.py; tune a downstream with its retry/breaker fields",
    ),
    (
        "src/*/core/**",
        "use service.configure (routers, middleware, exception handlers, readiness checks, "
        "lifespan resources) or settings.py; propose the change to the template if none fits",
    ),
    ("src/*/main.py", "register routers and hooks in service.configure"),
    ("tests/core/**", "add your own tests next to tests/test_users.py, outside tests/core/"),
    ("tests/conftest.py", "put your fixtures in a conftest.py of your own test folder"),
    ("tests/e2e/stub_downstream.py", "declare stub routes in tests/e2e/stub_routes.py"),
    ("tests/e2e/**", "add e2e tests in a file of your own under tests/e2e/"),
    ("Makefile", "add targets in a makefile of your own, or propose them to the template"),
    ("**", "propose the change to the template, or ask for a setting that makes it configurable"),
)


@functools.cache
def _pattern(glob: str) -> re.Pattern[str]:
    """A regular expression over ``"/" + path`` for ``glob``: a ``**`` segment is zero or more
    folders, ``*`` and ``?`` stay within one, ``[...]`` and ``[!...]`` are classes, and dot-files
    are ordinary names (wcmatch's GLOBSTAR | DOTGLOB). The fleet tool uses this one too."""
    regex = ""
    for segment in glob.strip("/").split("/"):
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


def matches(path: str, glob: str) -> bool:
    """Whether the relative POSIX ``path`` matches ``glob``."""
    return _pattern(glob).match("/" + path.strip("/")) is not None


def load_map(root: Path = ROOT) -> dict[str, list[str]]:
    """The ownership map of the service at ``root``."""
    import yaml

    loaded = yaml.safe_load((root / MAP_FILE).read_text())
    if not isinstance(loaded, dict) or any(not isinstance(loaded.get(k), list) for k in KINDS):
        msg = f"{MAP_FILE} must have the lists {', '.join(KINDS)}"
        raise ValueError(msg)
    return {kind: [str(glob) for glob in loaded[kind]] for kind in KINDS}


def owners(path: str, ownership: Mapping[str, list[str]]) -> list[str]:
    """Every kind whose patterns match ``path`` (exactly one for a rendered file)."""
    return [kind for kind in KINDS if any(matches(path, g) for g in ownership[kind])]


def extension_point(path: str) -> str:
    """What to do instead of editing the template-owned ``path``."""
    return next(hint for glob, hint in EXTENSION_POINTS if matches(path, glob))


@dataclass(frozen=True)
class Drift:
    path: str
    state: str  # "modified" or "deleted"


def _files(root: Path) -> Iterable[str]:
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if path.is_file() and ".git" not in relative.parts:
            yield relative.as_posix()


def drift(project: Path, pristine: Path, ownership: Mapping[str, list[str]]) -> list[Drift]:
    """Template-owned files of ``pristine`` (the template's render) that differ in ``project``.

    ``.copier-answers.yml`` is left out: Copier rewrites it, and its ``_commit`` names the
    version compared against.
    """
    found = []
    for path in sorted(_files(pristine)):
        if path == ANSWERS_FILE or owners(path, ownership) != ["template_owned"]:
            continue
        local = project / path
        if not local.is_file():
            found.append(Drift(path, "deleted"))
        elif local.read_bytes() != (pristine / path).read_bytes():
            found.append(Drift(path, "modified"))
    return found


def _answers(project: Path) -> dict[str, Any]:
    import yaml

    answers = yaml.safe_load((project / ANSWERS_FILE).read_text())
    if not isinstance(answers, dict) or not answers.get("_commit") or not answers.get("_src_path"):
        msg = f"{ANSWERS_FILE} records no template version (_commit, _src_path)"
        raise ValueError(msg)
    return answers


def render_version(src: str, into: Path, answers: Mapping[str, Any], commit: str) -> Path:
    """Render the template at ``src`` and ``commit`` with ``answers`` into ``into``, asking
    nothing and running no task or migration. The fleet tool renders through this too."""
    import copier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        copier.run_copy(
            src,
            str(into),
            data=dict(answers),
            vcs_ref=commit,
            defaults=True,
            overwrite=True,
            unsafe=True,  # the template has tasks and migrations; none runs here
            skip_tasks=True,
            quiet=True,
        )
    return into


def render_recorded(project: Path, into: Path) -> Path:
    """Render the template version and answers that ``project`` records, into ``into``."""
    answers = _answers(project)
    data = {k: v for k, v in answers.items() if not k.startswith("_")}
    return render_version(str(answers["_src_path"]), into, data, str(answers["_commit"]))


def _report_drift(strict: bool) -> int:
    try:
        ownership = load_map()
        with tempfile.TemporaryDirectory(prefix="template-render-") as tmp:
            found = drift(ROOT, render_recorded(ROOT, Path(tmp) / "render"), ownership)
    except Exception as exc:  # any failure to render means "cannot tell"
        print(f"template drift: not checked: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1 if strict else 0
    for item in found:
        print(
            f"template drift: {item.path}: {item.state} (template-owned; "
            f"`copier update` will overwrite or conflict). Instead: {extension_point(item.path)}",
            file=sys.stderr,
        )
    if not found:
        print("template drift: none (every template-owned file is as the template rendered it)")
        return 0
    if strict:
        print(f"template drift: {len(found)} file(s); failing (TEMPLATE_DRIFT=error)")
        return 1
    print(f"template drift: {len(found)} file(s); a warning (TEMPLATE_DRIFT=error fails)")
    return 0


def _report_owners(paths: list[str]) -> int:
    ownership = load_map()
    for path in paths:
        kinds = owners(Path(path).as_posix(), ownership)
        print(f"{path}: {', '.join(kinds) if kinds else 'team (not rendered by the template)'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    drift_parser = commands.add_parser("drift", help="report edited template-owned files")
    drift_parser.add_argument(
        "--strict", action="store_true", help="fail on drift (as TEMPLATE_DRIFT=error does)"
    )
    owner_parser = commands.add_parser("owner", help="who owns each PATH")
    owner_parser.add_argument("paths", nargs="+", metavar="PATH")
    args = parser.parse_args(argv)
    if args.command == "owner":
        return _report_owners(args.paths)
    strict = args.strict or os.environ.get("TEMPLATE_DRIFT", "warn").lower() == "error"
    return _report_drift(strict)


if __name__ == "__main__":
    sys.exit(main())
