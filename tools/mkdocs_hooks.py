"""MkDocs hooks: the site reads the repository's Markdown where it lives, without copies.

- ``<!-- include: PATH -->`` on a line of its own is replaced by the file at PATH (relative to
  the repository root): the changelog page shows ``CHANGELOG.md`` itself.
- A relative link is resolved against the file that holds it, so an included file's links keep
  working from the page that includes it. A link into ``docs/`` is rewritten relative to the
  page; a link to another file of the repository (``../bench/results/results.png``, a template
  file) is published under ``_repo/`` and linked there; a link to a file that a page includes
  (``CHANGELOG.md``) goes to that page. A link to nothing is left as it is, so
  ``mkdocs build --strict`` fails on it.
"""

from __future__ import annotations

import functools
import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files, InclusionLevel

REPO_ROOT = Path(__file__).resolve().parent.parent
DOCS = REPO_ROOT / "docs"
PUBLISHED = "_repo"
_INCLUDE = re.compile(r"^<!-- include: (\S+) -->$", re.MULTILINE)
_LINK = re.compile(r"(\]\()([^)\s#]+)(#[^)\s]*)?(\))")
_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:")


def _target(link: str, source: Path) -> Path | None:
    """The repository file a relative link of ``source`` points to, or None."""
    if _SCHEME.match(link) or link.startswith("/"):
        return None
    found = (source.parent / link).resolve()
    return found if found.is_relative_to(REPO_ROOT) and found.is_file() else None


@functools.cache
def _including_pages() -> dict[Path, str]:
    """Each file that a page includes, and that page's path under docs/."""
    return {
        (REPO_ROOT / included).resolve(): page.relative_to(DOCS).as_posix()
        for page in DOCS.rglob("*.md")
        for included in _INCLUDE.findall(page.read_text())
    }


def page_markdown(markdown: str, source: Path, page_dir: str, published: set[Path]) -> str:
    """``markdown`` (read from ``source``, shown at ``page_dir`` of the site) with includes
    expanded and links rebased; repository files outside docs/ it links to are added to
    ``published``."""

    def rebase(text: str, holder: Path) -> str:
        def rewrite(match: re.Match[str]) -> str:
            target = _target(match.group(2), holder)
            if target is None:
                return match.group(0)
            if target in _including_pages():
                uri = _including_pages()[target]
            elif target.is_relative_to(DOCS):
                uri = target.relative_to(DOCS).as_posix()
            else:
                published.add(target)
                uri = f"{PUBLISHED}/{target.relative_to(REPO_ROOT).as_posix()}"
            relative = posixpath.relpath(uri, page_dir or ".")
            return f"{match.group(1)}{relative}{match.group(3) or ''}{match.group(4)}"

        return _LINK.sub(rewrite, text)

    def include(match: re.Match[str]) -> str:
        included = REPO_ROOT / match.group(1)
        return rebase(included.read_text(), included)

    return _INCLUDE.sub(include, rebase(markdown, source))


def _page_dir(file: File) -> str:
    return posixpath.dirname(file.src_uri)


def on_files(files: Files, config: Any) -> Files:
    """Publish the repository files the pages link to, under ``_repo/``."""
    published: set[Path] = set()
    for file in files.documentation_pages():
        source = Path(file.abs_src_path or "")
        page_markdown(source.read_text(), source, _page_dir(file), published)
    for target in sorted(published):
        uri = f"{PUBLISHED}/{target.relative_to(REPO_ROOT).as_posix()}"
        # Included explicitly (MkDocs leaves out dotfiles such as .template-ownership.yml), and
        # out of the navigation (a published Markdown file is a page, but not one of the site's).
        files.append(
            File.generated(
                config, uri, abs_src_path=str(target), inclusion=InclusionLevel.NOT_IN_NAV
            )
        )
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """Expand includes and make every relative link resolvable from the page."""
    source = Path(page.file.abs_src_path)
    return page_markdown(markdown, source, _page_dir(page.file), set())
