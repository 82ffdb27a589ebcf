"""`fleet status`: each service's template version, how far behind it is, its answers, and its
drift: template-owned files that differ from what its version renders with its answers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleet import ownership
from fleet.gitutil import FleetError
from fleet.service import ANSWERS_FILE, committed_blobs, open_service, require_clean
from fleet.template import Template, blob_id

TemplateFor = Callable[[str], Template]


def empty_result(path: Path) -> dict[str, Any]:
    return {
        "path": str(path),
        "template": None,
        "template_version": None,
        "commit": None,
        "latest": None,
        "behind": None,
        "behind_since": None,
        "days_behind": None,
        "answers": None,
        "drift": None,
        "warnings": [],
        "error": None,
    }


def status_one(
    path: Path, template_for: TemplateFor, now: datetime | None = None
) -> dict[str, Any]:
    """Status of one service. Never raises for the service's own problems: they go in
    ``error``, with whatever could be read before the problem filled in."""
    result = empty_result(path)
    try:
        service = open_service(path)
        result["answers"] = service.answers
        template = template_for(service.src_path)
        result["template"] = template.src
        commit = template.resolve(service.recorded)
        _versions(result, template, commit, now or datetime.now(tz=UTC))
        require_clean(service)
        rendered = template.render(commit, service.answers)
        result["drift"] = drift(path, rendered, result["warnings"], result["template_version"])
    except FleetError as error:
        result["error"] = str(error)
    except Exception as error:  # one unreadable service must not end the run for the others
        result["error"] = f"unexpected {type(error).__name__}: {error}"
    return result


def _versions(result: dict[str, Any], template: Template, commit: str, now: datetime) -> None:
    result["commit"] = commit
    result["template_version"] = template.label(commit)
    latest = template.latest
    result["latest"] = latest.tag if latest else None
    missing = template.missing_releases(commit)
    result["behind"] = len(missing)
    if missing:
        since = missing[0].date
        result["behind_since"] = since.date().isoformat()
        result["days_behind"] = max(0, (now - since).days)
    else:
        result["days_behind"] = 0


def drift(
    path: Path, rendered: dict[str, bytes], warnings: list[str], version: str | None
) -> list[dict[str, str]] | None:
    """Template-owned files of the render that the service changed or deleted. None (unknown)
    when the render has no ownership map: versions older than the map do not say which files
    the template owns, and guessing would report the team's own files as drift."""
    map_text = rendered.get(ownership.MAP_FILE)
    if map_text is None:
        warnings.append(
            f"template version {version} has no {ownership.MAP_FILE}: drift is unknown until "
            "the service is updated to a release that has one"
        )
        return None
    try:
        owners = ownership.parse(map_text.decode())
    except ValueError as error:
        raise FleetError(f"the render's ownership map is invalid: {error}") from None
    committed = committed_blobs(path)
    found = []
    for relative, data in sorted(rendered.items()):
        if relative == ANSWERS_FILE:
            continue  # Copier's record of version and answers, reported as such, never drift
        kinds = owners.owners(relative)
        if len(kinds) != 1:
            listed = " and ".join(kinds) or "no list"
            warnings.append(f"{relative} matches {listed} of the ownership map; not checked")
            continue
        if kinds[0] != "template_owned":
            continue
        state = _state(path, relative, data, committed)
        if state:
            found.append({"path": relative, "state": state})
    return found


def _state(path: Path, relative: str, data: bytes, committed: dict[str, str]) -> str | None:
    """``modified``, ``deleted`` or None. A rendered file the service ignores (never
    committed) is compared on disk."""
    blob = committed.get(relative)
    if blob is not None:
        return None if blob == blob_id(data) else "modified"
    on_disk = path / relative
    if on_disk.is_file():
        return None if on_disk.read_bytes() == data else "modified"
    return "deleted"
