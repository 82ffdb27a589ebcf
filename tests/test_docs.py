"""The documentation site: `make docs` builds it strictly, the generated reference matches
copier.yml and a default render, the hand-written reference names every metric and log event
the code has, and the built site reads in a real browser (headless Chromium) without errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.support import (
    REPO_ROOT,
    copy_working_tree,
    ensure_debian_package,
    replace_once,
    run,
)
from tests.browser import CHROMIUM, Chromium, serve_directory
from tools import docs_reference

pytestmark = pytest.mark.xdist_group("docs")

PLATFORM = REPO_ROOT / "template/src/{{package_name}}/core"
# Pages the browser check opens, with the heading each must show.
READER_PAGES = {
    "": "FastAPI service template",
    "reference/questions/": "Questions",
    "how-to/tune-resilience/": "Tune resilience per downstream",
}


def _make_docs(root: Path, site: Path) -> None:
    run(["make", "docs", f"SITE_DIR={site}"], cwd=root)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    built = tmp_path_factory.mktemp("site")
    _make_docs(REPO_ROOT, built)
    return built


def test_make_docs_builds_every_page(site: Path) -> None:
    pages = {path.relative_to(REPO_ROOT / "docs") for path in (REPO_ROOT / "docs").rglob("*.md")}
    for page in pages:
        html = site / (page.parent if page.stem == "index" else page.with_suffix("")) / "index.html"
        assert html.is_file(), f"docs/{page} was not built into {html}"
    changelog = (site / "changelog/index.html").read_text()
    assert "Unreleased" in changelog, "the changelog page does not include CHANGELOG.md"


def test_a_broken_link_fails_make_docs(tmp_path: Path) -> None:
    copy = copy_working_tree(tmp_path / "repo")
    (copy / ".venv").symlink_to(REPO_ROOT / ".venv")
    replace_once(
        copy / "docs/getting-started.md",
        "# Getting started\n",
        "# Getting started\n\n[x](gone.md)\n",
    )
    with pytest.raises(AssertionError, match=r"gone\.md"):
        _make_docs(copy, tmp_path / "site")


@pytest.mark.render
def test_generated_reference_is_current() -> None:
    questions_page = docs_reference.questions_page()
    schema = docs_reference.default_settings()
    committed_questions = docs_reference.QUESTIONS_PAGE.read_text()
    committed_settings = docs_reference.SETTINGS_PAGE.read_text()
    undocumented = [
        name for name in docs_reference.questions() if f"## `{name}`" not in committed_questions
    ] + [row["env"] for row in schema["variables"] if f"`{row['env']}`" not in committed_settings]
    hint = f"regenerate with `{docs_reference.REGENERATE}`"
    assert not undocumented, f"not in docs/reference/: {undocumented}; {hint}"
    stale = docs_reference.stale_pages(
        {
            docs_reference.QUESTIONS_PAGE: questions_page,
            docs_reference.SETTINGS_PAGE: docs_reference.settings_page(schema),
        }
    )
    assert not stale, "\n".join(stale) + f"\n{hint}"


def test_the_readme_summarizes_every_question() -> None:
    """The README's short question table sits beside the generated page; it must not fall behind."""
    readme = (REPO_ROOT / "README.md").read_text()
    summarized = set(re.findall(r"^\| `([a-z_]+)` \|", readme, re.M))
    missing = set(docs_reference.questions()) - summarized
    assert not missing, f"README.md's question table lacks {sorted(missing)}"


def test_a_question_without_help_cannot_be_documented(tmp_path: Path) -> None:
    copier_yml = tmp_path / "copier.yml"
    copier_yml.write_text(
        (REPO_ROOT / "copier.yml").read_text() + "\nregion:\n  type: str\n  default: eu\n"
    )
    with pytest.raises(docs_reference.ReferenceError, match="without help: region"):
        docs_reference.questions_page(copier_yml)


def test_affected_files_come_from_the_template_and_its_includes() -> None:
    found = docs_reference.affected_files(
        REPO_ROOT / "template", REPO_ROOT / "includes", ["include_metrics", "slo_availability"]
    )
    # A directory whose name depends on the answer, and a file that uses it only through an
    # include (alerts.yml imports includes/observability.jinja, which reads slo_availability).
    assert "{% if include_metrics %}observability{% endif %}/" in found["include_metrics"]
    assert (
        "{% if include_metrics %}observability{% endif %}/alerts.yml" in found["slo_availability"]
    )
    assert docs_reference.readable_path(found["include_metrics"][-1]) == (
        "`observability/` (when `include_metrics`)"
    )


def test_metric_and_log_event_pages_name_every_one_in_the_code() -> None:
    code = "\n".join(path.read_text() for path in PLATFORM.rglob("*.py*"))
    metrics_page = (REPO_ROOT / "docs/reference/metrics.md").read_text()
    events_page = (REPO_ROOT / "docs/reference/log-events.md").read_text()
    counters = re.findall(r'Counter\(\s*"(\w+)"', code)
    others = re.findall(r'(?:Histogram|Gauge|GaugeMetricFamily)\(\s*"(\w+)"', code)
    metrics = [f"{name}_total" for name in counters] + others
    events = re.findall(r'log\.(?:debug|info|warning|error|exception)\(\s*"([\w.]+)"', code)
    assert len(metrics) >= 10 and len(events) >= 10, "the patterns no longer find the names"
    assert not [m for m in metrics if f"`{m}`" not in metrics_page], "docs/reference/metrics.md"
    assert not [e for e in events if f"`{e}`" not in events_page], "docs/reference/log-events.md"


def test_the_site_reads_in_chromium(site: Path, tmp_path: Path) -> None:
    ensure_debian_package("chromium", [CHROMIUM])
    with serve_directory(site) as base, Chromium() as browser:
        reports = {page: browser.open(f"{base}/{page}", screenshot=True) for page in READER_PAGES}
    for page, heading in READER_PAGES.items():
        report = reports[page]
        assert report.errors == [], f"/{page}: {report.errors}"
        assert report.h1.rstrip("¶") == heading, f"/{page} shows {report.h1!r}"
        assert report.title.startswith(heading), report.title
        assert report.nav_links >= 30, f"/{page} has {report.nav_links} navigation links"
        assert report.stylesheets >= 1, f"/{page} loaded no stylesheet"
        shot = tmp_path / f"{page.strip('/').replace('/', '-') or 'home'}.png"
        shot.write_bytes(report.screenshot)
        assert report.screenshot.startswith(b"\x89PNG") and len(report.screenshot) > 20_000
