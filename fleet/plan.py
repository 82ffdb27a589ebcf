"""`fleet plan`: what `copier update --to REF` would do to each service, without changing it.
With ``--data KEY=VALUE``, the update also changes those answers (Copier's ``--data``).

The prediction is made by doing the real thing where it cannot matter: the same Copier update
that `fleet update` runs, with the same options, in a throwaway local clone of the service.
Two services whose committed trees are identical get the same update, so one clone answers for
both.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import yaml

from fleet.gitutil import FleetError, git
from fleet.service import Service, open_service, require_clean, tree_id
from fleet.template import Template, answers_key, redirect_output

TemplateFor = Callable[[str], Template]
CONFLICT_MARKER = re.compile(rb"^(<{7}|={7}|>{7})( |$)", re.MULTILINE)
# What the template's migrations say they did ("migration 0.3.0 (...): src/x.py: httpx ->
# httpx2"): the plan shows it under the service's line.
MIGRATION_NOTE = re.compile(r"^migration \S+ .*$", re.MULTILINE)


def apply_update(path: Path, ref: str, data: Mapping[str, str] | None = None) -> str:
    """`copier update --trust --defaults --conflict inline --vcs-ref REF [--data KEY=VALUE ...]`
    in ``path``: the one update both `plan` and `update` run. The values are strings, as on
    Copier's command line: Copier casts and validates them by each question's type, choices and
    validator, and a value it refuses is this service's failure. Returns what Copier and its
    migrations printed."""
    import copier
    from copier.errors import DirtyLocalWarning

    with warnings.catch_warnings(), redirect_output() as output:
        warnings.simplefilter("ignore", DirtyLocalWarning)
        try:
            copier.run_update(
                str(path),
                data=dict(data or {}),
                conflict="inline",
                defaults=True,
                overwrite=True,
                unsafe=True,
                vcs_ref=ref,
                quiet=True,
            )
        except Exception as error:
            failure: Exception | None = error
        else:
            failure = None
    if failure is not None:
        detail = output.text.strip()[-2000:]
        message = f"copier update failed: {failure}" + (f"\n{detail}" if detail else "")
        raise FleetError(message)
    return output.text


def conflicts(path: Path) -> list[str]:
    """Files the update left in conflict: unmerged in git's index, or changed and holding
    conflict markers (Copier writes both)."""
    unmerged = set(git(path, "diff", "--name-only", "--diff-filter=U", "-z").split("\0"))
    changed = git(path, "status", "--porcelain", "-z", "--untracked-files=all").split("\0")
    for entry in changed:
        name = entry[3:]
        candidate = path / name
        if name and candidate.is_file() and CONFLICT_MARKER.search(candidate.read_bytes()):
            unmerged.add(name)
    return sorted(name for name in unmerged if name)


def migrations(template: Template, current: str, target: str) -> list[dict[str, Any]]:
    """The `_migrations` of the target's copier.yml that the update runs: those whose version is
    in (current, target] (PEP 440, as Copier compares), and those without a version."""
    old, new = template.pep440(current), template.pep440(target)
    if old is None or new is None:
        return []  # Copier runs no migration when either side is not a version
    from packaging.version import Version

    found = []
    for entry in template.copier_config(target).get("_migrations", []) or []:
        if not isinstance(entry, dict) or "command" not in entry:
            continue
        version = entry.get("version")
        if version is not None and not (old < Version(str(version)) <= new):
            continue
        command = entry["command"]
        shown = " ".join(map(str, command)) if isinstance(command, list) else str(command)
        found.append({"version": None if version is None else str(version), "command": shown})
    return found


def empty_result(path: Path) -> dict[str, Any]:
    return {
        "path": str(path),
        "template_version": None,
        "target": None,
        "outcome": "error",
        "conflicts": [],
        "migrations": [],
        "migration_notes": [],
        "changed": [],
        "data": {},
        "error": None,
    }


def describe_data(data: Mapping[str, str]) -> str:
    """The answers an update changes, as given: ``python_version=3.13, owner=team-b``."""
    return ", ".join(f"{key}={value}" for key, value in data.items())


def check_data(template: Template, target: str, data: Mapping[str, str]) -> None:
    """Refuse an answer to a question the template at ``target`` does not ask; Copier would
    record it without using it."""
    questions = template.questions(target)
    unknown = [key for key in data if key not in questions]
    if unknown:
        raise FleetError(
            f"--data {', '.join(unknown)}: not a question of the template {template.src} at "
            f"{template.label(target)}; its questions: {', '.join(questions) or '(none)'}"
        )


def unknown_questions(
    paths: Iterable[Path], ref: str, template_for: TemplateFor, data: Mapping[str, str]
) -> list[str]:
    """Why ``data`` cannot go to every service's template at ``ref``, one message per distinct
    template, before any service is touched. Services that cannot be read, or whose template has
    no ``ref``, are left to their own results."""
    problems: dict[str, str] = {}
    for path in paths:
        try:
            template = template_for(open_service(path).src_path)
            target = template.resolve(ref)
        except Exception:  # an unreadable service gets its error in the run itself
            continue
        try:
            check_data(template, target, data)
        except FleetError as error:
            problems.setdefault(template.src, str(error))
    return list(problems.values())


def answers_unchanged(service: Service, data: Mapping[str, str]) -> bool:
    """Whether the service already records every answer in ``data`` (as Copier would read the
    value: ``3.13``, ``'3.13'`` and ``true`` compare with the recorded YAML)."""
    for key, value in data.items():
        if key not in service.answers:
            return False
        recorded = service.answers[key]
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError:
            parsed = value
        if recorded != value and recorded != parsed and str(recorded) != value:
            return False
    return True


def prepare(
    path: Path, ref: str, template_for: TemplateFor, data: Mapping[str, str] | None = None
) -> tuple[Service, Template, str, str]:
    """Read the service and resolve its version and the target; raise FleetError for any bad
    input (an answer to a question the target does not ask included), before anything runs."""
    service = open_service(path)
    require_clean(service)
    template = template_for(service.src_path)
    target = template.resolve(ref)
    check_data(template, target, data or {})
    current = template.resolve(service.recorded)
    old, new = template.pep440(current), template.pep440(target)
    if old is not None and new is not None and new < old:
        raise FleetError(
            f"{ref} ({new}) is older than the service's template version ({old}); "
            "Copier does not downgrade"
        )
    return service, template, target, current


def _trial(path: Path, ref: str, data: Mapping[str, str]) -> dict[str, Any]:
    """Run the update in a throwaway clone of ``path``; return conflicts and changed files.
    Runs in a worker process (Copier changes the working directory while it works). The clone
    borrows the service's objects (--shared: nothing copied, any file system) and only adds its
    own, so the service is never written to."""
    scratch = Path(tempfile.mkdtemp(prefix="fleet-plan-"))
    try:
        clone = scratch / path.name
        git(scratch, "clone", "--quiet", "--shared", str(path), str(clone))
        output = apply_update(clone, ref, data)
        changed = git(clone, "status", "--porcelain", "-z", "--untracked-files=all")
        return {
            "conflicts": conflicts(clone),
            "migration_notes": MIGRATION_NOTE.findall(output),
            "changed": sorted(e[3:] for e in changed.split("\0") if e),
            "error": None,
        }
    except FleetError as error:
        return {"conflicts": [], "changed": [], "error": str(error)}
    except Exception as error:  # reported for this service; the other trials go on
        return {
            "conflicts": [],
            "changed": [],
            "error": f"unexpected {type(error).__name__}: {error}",
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def plan_all(
    paths: Iterable[Path],
    ref: str,
    template_for: TemplateFor,
    jobs: int = 1,
    on_step: Callable[[str], None] = lambda name: None,
    cache_dir: Path | None = None,
    data: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Plan every service: read all of them, then run one trial update per distinct committed
    tree, ``jobs`` at a time. ``data``: answers the update changes (Copier's ``--data``)."""
    data = dict(data or {})
    results: list[dict[str, Any]] = []
    trials: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for path in paths:
        result = empty_result(path)
        result["data"] = dict(data)
        results.append(result)
        try:
            service, template, target, current = prepare(path, ref, template_for, data)
        except FleetError as error:
            result["error"] = str(error)
            continue
        except Exception as error:  # one unreadable service must not end the run
            result["error"] = f"unexpected {type(error).__name__}: {error}"
            continue
        result["template_version"] = template.label(current)
        result["target"] = template.label(target)
        if current == target and answers_unchanged(service, data):
            result["outcome"] = "clean"  # already there: the update changes nothing
            continue
        result["migrations"] = migrations(template, current, target)
        key: tuple[str, ...] = (tree_id(path), target, service.src_path)
        if data:
            key += (answers_key(data),)
        trials.setdefault(key, []).append(result)
    _run_trials(trials, ref, jobs, on_step, cache_dir, data)
    return results


def _cache_file(cache_dir: Path | None, key: tuple[str, ...]) -> Path | None:
    """A trial's outcome depends only on the committed tree, the target commit, the template
    source and the answers given with ``--data``, so it is cached under those."""
    if cache_dir is None:
        return None
    digest = hashlib.sha256("\0".join(key).encode()).hexdigest()[:32]
    return cache_dir / f"plan-{digest}.json"


def _run_trials(
    trials: dict[tuple[str, ...], list[dict[str, Any]]],
    ref: str,
    jobs: int,
    on_step: Callable[[str], None],
    cache_dir: Path | None,
    data: Mapping[str, str],
) -> None:
    pending = []
    for key, group in trials.items():
        cached = _cache_file(cache_dir, key)
        if cached is not None and cached.is_file():
            on_step(Path(group[0]["path"]).name)
            _fill(group, json.loads(cached.read_text()))
        else:
            pending.append((key, group))
    firsts = [Path(group[0]["path"]) for _, group in pending]
    if jobs > 1 and len(pending) > 1:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("fork")) as pool:
            outcomes: Iterable[dict[str, Any]] = pool.map(
                _trial, firsts, [ref] * len(firsts), [data] * len(firsts)
            )
            _collect(pending, outcomes, on_step, cache_dir)
    else:
        _collect(pending, (_trial(first, ref, data) for first in firsts), on_step, cache_dir)


def _collect(
    pending: list[tuple[tuple[str, ...], list[dict[str, Any]]]],
    outcomes: Iterable[dict[str, Any]],
    on_step: Callable[[str], None],
    cache_dir: Path | None,
) -> None:
    for (key, group), outcome in zip(pending, outcomes, strict=True):
        on_step(Path(group[0]["path"]).name)
        _fill(group, outcome)
        cached = _cache_file(cache_dir, key)
        if cached is not None and outcome["error"] is None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_text(json.dumps(outcome))


def _fill(group: list[dict[str, Any]], outcome: dict[str, Any]) -> None:
    for result in group:
        result.update(outcome)
        if outcome["error"]:
            result["outcome"] = "error"
        else:
            result["outcome"] = "conflicts" if outcome["conflicts"] else "clean"
