"""Command line: `status`, `plan`, `update` and `report` over a list of service repositories.

Exit status: 0 when every service could be handled, 1 when any service had an error or a failed
update (or the run stopped), 2 for bad usage.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleet import __version__
from fleet.gitutil import FleetError
from fleet.plan import describe_data, plan_all, unknown_questions
from fleet.progress import Progress, wanted
from fleet.report import render_html
from fleet.status import status_one
from fleet.template import Template
from fleet.update import Options, update_all


def repositories(entries: list[str], files: list[str]) -> list[Path]:
    """The services named on the command line: paths, ``@list`` files and --from-file lists.
    A list file has one path a line; blank lines and ``#`` comments are ignored, and relative
    paths are relative to the list file."""
    paths: list[Path] = []
    for entry in entries:
        if entry.startswith("@"):
            paths += _read_list(Path(entry[1:]))
        else:
            paths.append(Path(entry))
    for name in files:
        paths += _read_list(Path(name))
    return [Path(p).absolute() for p in dict.fromkeys(paths)]


def _read_list(path: Path) -> list[Path]:
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise SystemExit(f"fleet: cannot read the list {path}: {error.strerror}") from None
    found = []
    for line in lines:
        entry = line.split("#", 1)[0].strip()
        if entry:
            found.append(path.parent / entry)
    return found


class Templates:
    """One Template per template source, made on first use; --template replaces every
    service's recorded source (a mirror, or a local checkout)."""

    def __init__(self, override: str | None, cache_dir: Path | None, workdir: Path) -> None:
        self.override, self.cache_dir, self.workdir = override, cache_dir, workdir
        self.known: dict[str, Template] = {}
        self.unreadable: dict[str, FleetError] = {}

    def __call__(self, src: str) -> Template:
        """The template at ``src``; one that cannot be read fails once, then every service that
        records it gets the same error without another clone attempt."""
        key = self.override or src
        if key in self.unreadable:
            raise self.unreadable[key]
        if key not in self.known:
            try:
                self.known[key] = Template(key, self.workdir, self.cache_dir)
            except FleetError as error:
                self.unreadable[key] = error
                raise
        return self.known[key]

    @property
    def render_count(self) -> int:
        return sum(t.render_count for t in self.known.values())


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number of at least 1")
    return value


def _rate(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction from 0 to 1 (0.2 = 20%)")
    return value


def _answer(text: str) -> tuple[str, str]:
    """One ``--data KEY=VALUE``: the value is kept as text, as Copier's own --data does."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE (python_version=3.13)")
    return key.strip(), value


def _add_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=_answer,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change this answer in the update, as `copier update --data` (repeatable)",
    )


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "repos", nargs="*", metavar="REPO", help="service repository, or @FILE listing one per line"
    )
    common.add_argument(
        "--from-file",
        action="append",
        default=[],
        metavar="FILE",
        help="file listing service repositories, one per line (repeatable)",
    )
    common.add_argument(
        "--template",
        metavar="SRC",
        help="read versions and render from SRC instead of each service's recorded _src_path "
        "(Copier itself, in plan and update, always uses _src_path)",
    )
    common.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="keep renders (by template commit and answers) and plans (by service "
        "tree and target commit) on disk, for later runs",
    )
    common.add_argument(
        "--progress",
        action="store_true",
        help="show progress on stderr even when it is not a terminal",
    )
    parser = argparse.ArgumentParser(prog="fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"fleet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", parents=[common], help="versions, answers and drift")
    status.add_argument("--json", action="store_true", help="a JSON list on stdout")
    plan = sub.add_parser("plan", parents=[common], help="what an update to REF would do")
    plan.add_argument("--json", action="store_true", help="a JSON list on stdout")
    plan.add_argument("--to", required=True, metavar="REF", help="template tag, branch or commit")
    plan.add_argument("--jobs", type=_positive, default=1, help="trial updates run in parallel")
    _add_data(plan)
    update = sub.add_parser("update", parents=[common], help="update on a branch, in waves")
    update.add_argument("--json", action="store_true", help="a JSON list on stdout")
    update.add_argument("--to", required=True, metavar="REF", help="template tag, branch or commit")
    update.add_argument(
        "--wave-size", type=_positive, default=10, metavar="N", help="services per wave (10)"
    )
    update.add_argument(
        "--max-failure-rate",
        type=_rate,
        default=0.0,
        metavar="R",
        help="stop after a wave where more than this fraction failed (0-1)",
    )
    update.add_argument(
        "--jobs", type=_positive, default=1, help="services of a wave updated at the same time"
    )
    update.add_argument("--open-pr", action="store_true", help="open pull requests (gh or glab)")
    update.add_argument("--pr-tool", choices=["auto", "gh", "glab"], default="auto")
    _add_data(update)
    report = sub.add_parser("report", parents=[common], help="a self-contained HTML report")
    report.add_argument("--output", type=Path, default=Path("fleet-report.html"), metavar="FILE")
    report.add_argument(
        "--plan-to",
        metavar="REF",
        help="predict conflicts of an update to REF (default: the latest release)",
    )
    report.add_argument("--no-plan", action="store_true", help="leave conflicts out (faster)")
    report.add_argument("--jobs", type=_positive, default=1, help="trial updates run in parallel")
    report.set_defaults(json=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    paths = repositories(args.repos, args.from_file)
    if not paths:
        print("fleet: no service repositories given", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="fleet-"))
    try:
        templates = Templates(args.template, args.cache_dir, workdir)
        progress = Progress(len(paths), args.command, wanted(args.json, args.progress))
        handler: Callable[..., int] = {
            "status": _status,
            "plan": _plan,
            "update": _update,
            "report": _report,
        }[args.command]
        return handler(args, paths, templates, progress)
    except FleetError as error:
        print(f"fleet: {error}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _status(
    args: argparse.Namespace, paths: list[Path], templates: Templates, progress: Progress
) -> int:
    results = _statuses(paths, templates, progress)
    _emit(args.json, results, _status_line)
    _summary(progress, f"{templates.render_count} render(s) for {len(paths)} service(s)")
    return 1 if any(r["error"] for r in results) else 0


def _statuses(paths: list[Path], templates: Templates, progress: Progress) -> list[dict[str, Any]]:
    results = []
    for path in paths:
        progress.step(path.name)
        results.append(status_one(path, templates))
    progress.done()
    return results


def _plan(
    args: argparse.Namespace, paths: list[Path], templates: Templates, progress: Progress
) -> int:
    data = _data(args, paths, templates)
    if data is None:
        return 2
    results = plan_all(
        paths, args.to, templates, args.jobs, progress.step, args.cache_dir, data=data
    )
    progress.done()
    _emit(args.json, results, _plan_line)
    return 1 if any(r["outcome"] == "error" for r in results) else 0


def _update(
    args: argparse.Namespace, paths: list[Path], templates: Templates, progress: Progress
) -> int:
    data = _data(args, paths, templates)
    if data is None:
        return 2
    options = Options(
        args.to,
        args.wave_size,
        args.max_failure_rate,
        args.open_pr,
        args.pr_tool,
        jobs=args.jobs,
        data=data,
    )
    results, stopped = update_all(paths, options, templates, progress.step)
    progress.done()
    _emit(args.json, results, _update_line)
    if stopped:
        print(f"fleet: stopped: {stopped}", file=sys.stderr)
    failed = any(r["outcome"] in ("error", "failed") for r in results)
    return 1 if failed or stopped else 0


def _data(
    args: argparse.Namespace, paths: list[Path], templates: Templates
) -> dict[str, str] | None:
    """The --data answers, once every service's template at --to is known to ask them; None
    (after saying why on stderr) when one does not, so that nothing runs. A key given twice
    keeps its last value, as Copier's own --data does."""
    data = dict(args.data)
    problems = unknown_questions(paths, args.to, templates, data) if data else []
    for problem in problems:
        print(f"fleet: {problem}", file=sys.stderr)
    return None if problems else data


def _report(
    args: argparse.Namespace, paths: list[Path], templates: Templates, progress: Progress
) -> int:
    statuses = _statuses(paths, templates, progress)
    plans: list[dict[str, Any]] = []
    target = None
    if not args.no_plan:
        target = args.plan_to or next((s["latest"] for s in statuses if s["latest"]), None)
    if target:
        planning = Progress(len(paths), "plan", progress.enabled)
        plans = plan_all(paths, target, templates, args.jobs, planning.step, args.cache_dir)
        planning.done()
    generated = datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    args.output.write_text(render_html(statuses, plans, target, generated))
    print(f"fleet: wrote {args.output}", file=sys.stderr)
    return 1 if any(s["error"] for s in statuses) else 0


def _emit(
    as_json: bool, results: list[dict[str, Any]], line: Callable[[dict[str, Any]], str]
) -> None:
    if as_json:
        json.dump(results, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        for result in results:
            print(line(result))


def _summary(progress: Progress, text: str) -> None:
    if progress.enabled:
        print(f"fleet: {text}", file=sys.stderr)


def _status_line(r: dict[str, Any]) -> str:
    if r["error"] and not r["template_version"]:
        return f"{r['path']}: error: {r['error']}"
    drift = r["drift"]
    if r["error"]:
        shown = "not checked"
    elif drift is None:
        shown = "unknown (no ownership map at this version)"
    else:
        shown = ", ".join(f"{d['state']} {d['path']}" for d in drift) or "none"
    line = (
        f"{r['path']}: {r['template_version']} (latest {r['latest']}, {r['behind']} behind), "
        f"drift: {shown}"
    )
    return line + (f"; error: {r['error']}" if r["error"] else "")


def _plan_line(r: dict[str, Any]) -> str:
    if r["outcome"] == "error":
        return f"{r['path']}: error: {r['error']}"
    extra = f" in {', '.join(r['conflicts'])}" if r["conflicts"] else ""
    migrations = f"; migrations: {len(r['migrations'])}" if r["migrations"] else ""
    answers = f" with {describe_data(r['data'])}" if r["data"] else ""
    notes = "".join(f"\n  {note}" for note in r.get("migration_notes", []))
    return (
        f"{r['path']}: {r['template_version']} -> {r['target']}{answers}: "
        f"{r['outcome']}{extra}{migrations}{notes}"
    )


def _update_line(r: dict[str, Any]) -> str:
    tail = f" on {r['branch']}" if r["branch"] else ""
    why = f": {r['error']}" if r["error"] else ""
    return f"{r['path']}: {r['outcome']}{tail}{why}"
