"""Copier migration for 0.3.0, run after the update merges (needs --trust); also a codemod.

0.3.0 moves the service from ``httpx`` (last released in December 2024) to ``httpx2``, the
maintained line of the same API (import name ``httpx2``, ``httpcore2`` beneath). The platform's
code arrives already moved. The team's own code does not: ``users.py``, ``tests/test_users.py``
and every module the team wrote are never touched by an update, and they still say
``import httpx``. Left so, they would use other classes than the shared client's (an
``except httpx.HTTPError`` would never catch what the shared client raises), or fail to import
in the image, where ``httpx`` is no longer installed.

So, after Copier's merge, this script rewrites every Python source of the project:

- ``import httpx`` and ``import httpcore`` become ``import httpx2`` and ``import httpcore2``;
  ``from httpx import ...`` becomes ``from httpx2 import ...`` (and the same for submodules);
- every use of the module (``httpx.Response``, ``httpx.HTTPError``, ``httpx`` passed as a value)
  becomes ``httpx2``'s, where the file imported it as ``httpx``; a module imported under another
  name (``import httpx as hx``) keeps its uses, only the import changes;
- a dotted name in a string or a comment (``"httpx.AsyncClient.send"`` for ``mock.patch``,
  ``httpx.Response`` in a docstring) follows; the bare word ``httpx`` in prose and every other
  string (a logger's name, a setting's value) stays as it is.

A renamed line must stay within ruff's line length (``line-length`` of the nearest
``pyproject.toml``, or ``pyproject.toml.jinja`` in a template, else 100), or ``make lint`` would
fail on it: a comment line that grows past it is wrapped, and so is a docstring's line. When a
line of code would grow past it, the file keeps its code as written and imports
``httpx2 as httpx`` instead (same classes, same lint rules), and the script says so.

It is idempotent (a moved file is left as it is), changes only files that use httpx, never
commits and never touches the network. Besides Copier, run it by hand over any directory
(a service's ``src`` and ``tests``, or a template's ``template`` and ``includes``, whose
``.py.jinja`` sources it reads as Python)::

    python hooks/migrations/v0_3_0_httpx2.py <directory or file>...
    python hooks/migrations/v0_3_0_httpx2.py --check <directory>...   # exit 1 if any would change
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

RENAMES = {"httpx": "httpx2", "httpcore": "httpcore2"}
DEFAULT_LINE_LENGTH = 100
SKIPPED_DIRECTORIES = {
    ".git",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    "node_modules",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    "build",
    "dist",
    "site",
}
_JINJA_TAG = re.compile(r"\{%.*?%\}")
_JINJA = re.compile(r"\{#.*?#\}|\{%.*?%\}|\{\{.*?\}\}", re.DOTALL)
_PYTHON_NAME = re.compile(r"\.(py|pyi)(\.jinja)?$")
# In strings and comments: a dotted name that starts with the old module, not part of a longer
# word, path or host name (``pytest_httpx.``, ``python-httpx.org``, ``encode/httpx.git``).
_DOTTED = re.compile(r"(?<![\w.\-/])(httpx|httpcore)(?=\.[A-Za-z_])")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING_PREFIXES = {"r", "u", "b", "f", "t", "br", "rb", "fr", "rf", "tr", "rt"}
_LINE_LENGTH = re.compile(r"^\s*line-length\s*=\s*(\d+)", re.MULTILINE)


@dataclass(slots=True)
class Token:
    kind: str  # "name", "string", "comment", "newline", "op", "space"
    text: str
    start: int
    docstring: bool = False  # a triple-quoted string that starts a statement


def _string_end(text: str, start: int, quote: str) -> int:
    """The index just past the string whose opening ``quote`` is at ``start``."""
    i = start + len(quote)
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if text.startswith(quote, i):
            return i + len(quote)
        if char == "\n" and len(quote) == 1:
            return i  # unterminated (or a Jinja oddity): stop at the line's end
        i += 1
    return len(text)


def tokenize(text: str) -> Iterator[Token]:
    """Python's tokens, as far as this rewrite needs them: names, strings, comments, newlines.

    Lenient on purpose, and aware of Jinja: in a ``.py.jinja`` source, ``{# ... #}`` is a
    comment, and a tag or an expression is one opaque token, so a template reads as Python."""
    i, depth, statement_start = 0, 0, True
    while i < len(text):
        char = text[i]
        jinja = _JINJA.match(text, i)
        if jinja:
            # {# a comment #}, {% a tag %} or {{ an expression }}: one token, brackets unseen.
            kind = "comment" if jinja.group().startswith("{#") else "jinja"
            yield Token(kind, jinja.group(), i)
            i = jinja.end()
            continue
        if char == "#":
            end = text.find("\n", i)
            end = len(text) if end == -1 else end
            yield Token("comment", text[i:end], i)
            i = end
            continue
        if char == "\n":
            yield Token("newline", char, i)
            statement_start = depth == 0 or statement_start
            i += 1
            continue
        if char in " \t\r\f\\":
            yield Token("space", char, i)
            i += 1
            continue
        name = _NAME.match(text, i)
        prefix = name.group() if name else ""
        quote_at = i + len(prefix)
        if (not prefix or prefix.lower() in _STRING_PREFIXES) and text[quote_at : quote_at + 1] in (
            "'",
            '"',
        ):
            quote = text[quote_at] * 3 if text[quote_at : quote_at + 3] in ("'''", '"""') else ""
            quote = quote or text[quote_at]
            end = _string_end(text, quote_at, quote)
            yield Token("string", text[i:end], i, docstring=statement_start and len(quote) == 3)
            statement_start = False
            i = end
            continue
        if name:
            yield Token("name", prefix, i)
            statement_start = False
            i = name.end()
            continue
        if char in "([{":
            depth += 1
        elif char in ")]}":
            depth = max(depth - 1, 0)
        yield Token("op", char, i)
        statement_start = char == ";"
        i += 1


@dataclass(slots=True)
class _Edits:
    """Replacements by position: (start, end) -> new text."""

    spans: dict[tuple[int, int], str] = field(default_factory=dict)

    def replace(self, token: Token, new: str) -> None:
        if new != token.text:
            self.spans[(token.start, token.start + len(token.text))] = new

    def apply(self, text: str) -> str:
        out, last = [], 0
        for (start, end), new in sorted(self.spans.items()):
            out.append(text[last:start])
            out.append(new)
            last = end
        out.append(text[last:])
        return "".join(out)


def _statements(tokens: list[Token]) -> Iterator[list[Token]]:
    """The tokens grouped by logical line (newlines inside brackets do not end one)."""
    current: list[Token] = []
    depth = 0
    for token in tokens:
        current.append(token)
        if token.kind == "op" and token.text in "([{":
            depth += 1
        elif token.kind == "op" and token.text in ")]}":
            depth = max(depth - 1, 0)
        elif (token.kind == "newline" and depth == 0) or (token.kind == "op" and token.text == ";"):
            yield current
            current = []
    if current:
        yield current


def _rewrite(text: str, *, uses: bool) -> str:
    """``text`` with the imports renamed and, with ``uses``, every use of the modules too."""
    tokens = list(tokenize(text))
    edits = _Edits()
    bound: set[str] = set()  # old module names that the file binds under their own name
    import_tokens: set[int] = set()  # where the import statements' names are
    for statement in _statements(tokens):
        words = [t for t in statement if t.kind in ("name", "op", "string", "comment")]
        code = [t for t in words if t.kind in ("name", "op")]
        if not code or code[0].kind != "name" or code[0].text not in ("import", "from"):
            continue
        import_tokens.update(t.start for t in code)
        if code[0].text == "from":
            # from <module> import <names>: only the module (its first part) is ours.
            if len(code) > 1 and code[1].text in RENAMES:
                edits.replace(code[1], RENAMES[code[1].text])
            continue
        # import a, b.c as d: each item's first name is a module; "as" binds another name.
        for index, token in enumerate(code[1:], start=1):
            previous = code[index - 1]
            if token.kind != "name" or token.text not in RENAMES:
                continue
            if previous.text == "as" or previous.text == ".":
                continue
            dotted = index + 1 < len(code) and code[index + 1].text == "."
            if _as_index(code, index) is not None:
                edits.replace(token, RENAMES[token.text])  # import httpx as hx: hx stays
            elif uses or dotted:
                edits.replace(token, RENAMES[token.text])
                bound.add(token.text)
            else:
                edits.replace(token, f"{RENAMES[token.text]} as {token.text}")
    if not uses:
        return edits.apply(text)
    previous_code: Token | None = None
    for token in tokens:
        if token.kind in ("string", "comment"):
            edits.replace(token, _DOTTED.sub(lambda m: RENAMES[m.group(1)], token.text))
        elif (
            token.kind == "name"
            and token.text in bound
            and token.start not in import_tokens
            and not (previous_code is not None and previous_code.text == ".")
        ):
            edits.replace(token, RENAMES[token.text])
        if token.kind in ("name", "op", "string"):
            previous_code = token
    return _dedupe_imports(edits.apply(text))


def _as_index(code: list[Token], index: int) -> int | None:
    """Where ``as`` follows the dotted module name at ``index`` of an import, if it does."""
    i = index + 1
    while i + 1 < len(code) and code[i].text == "." and code[i + 1].kind == "name":
        i += 2
    return i if i < len(code) and code[i].text == "as" else None


def _dedupe_imports(text: str) -> str:
    """Drop an ``import httpx2`` line that repeats one above it (a file imported both)."""
    seen: set[str] = set()
    lines = []
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped in ("import httpx2", "import httpcore2"):
            key = f"{len(line) - len(line.lstrip())}:{stripped}"
            if key in seen:
                continue
            seen.add(key)
        lines.append(line)
    return "".join(lines)


def _wrap(line: str, limit: int, prefix: str) -> list[str] | None:
    """``line`` split at the last space that fits, the rest after ``prefix``; None if none."""
    body = line.rstrip("\n")
    cut = body.rfind(" ", len(prefix) + 1, limit + 1)
    if cut <= len(prefix):
        return None
    first, rest = body[:cut].rstrip(), body[cut + 1 :].lstrip()
    second = prefix + rest
    if len(second) > limit:
        wrapped = _wrap(second, limit, prefix)
        return None if wrapped is None else [first + "\n", *wrapped]
    return [first + "\n", second + "\n"]


def _kinds_by_line(text: str) -> dict[int, set[str]]:
    """For each line number: the kinds of token on it ("code", "comment", "docstring")."""
    kinds: dict[int, set[str]] = {}
    line_starts = [0] + [i + 1 for i, char in enumerate(text) if char == "\n"]

    def line_of(position: int) -> int:
        lo, hi = 0, len(line_starts) - 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if line_starts[mid] <= position:
                lo = mid
            else:
                hi = mid - 1
        return lo

    for token in tokenize(text):
        if token.kind in ("space", "newline"):
            continue
        first, last = line_of(token.start), line_of(token.start + max(len(token.text) - 1, 0))
        if token.kind == "comment" and token.text.startswith("#"):
            kind = "comment"  # a Jinja comment is not wrapped: it reads as code here
        elif token.kind == "string" and token.docstring:
            kind = "docstring"
        else:
            kind = "code"
        for number in range(first, last + 1):
            kinds.setdefault(number, set()).add(kind)
    return kinds


def _fit(original: str, renamed: str, limit: int) -> str | None:
    """``renamed`` with its lines that grew past ``limit`` wrapped, or None when a line of
    code grew past it (only comments and docstrings can be wrapped without changing code)."""
    before = original.splitlines(keepends=True)
    after = renamed.splitlines(keepends=True)
    if len(before) != len(after):
        before_set = set(before)
        grown = [i for i, line in enumerate(after) if line not in before_set]
    else:
        grown = [i for i, (old, new) in enumerate(zip(before, after, strict=True)) if old != new]
    too_long = [i for i in grown if len(after[i].rstrip("\n")) > limit]
    if not too_long:
        return renamed
    kinds = _kinds_by_line(renamed)
    replacements: dict[int, list[str]] = {}
    for number in too_long:
        line = after[number]
        indent = line[: len(line) - len(line.lstrip())]
        on_line = kinds.get(number, {"code"})
        if on_line == {"comment"}:
            wrapped = _wrap(line, limit, indent + "# ")
        elif on_line == {"docstring"}:
            wrapped = _wrap(line, limit, indent)
        else:
            wrapped = None
        if wrapped is None:
            return None
        replacements[number] = wrapped
    return "".join(
        "".join(replacements[i]) if i in replacements else line for i, line in enumerate(after)
    )


def line_length(path: Path) -> int:
    """Ruff's line length for ``path``: from the nearest pyproject.toml (or a template's
    pyproject.toml.jinja), else 100."""
    for directory in [path.parent, *path.parent.parents]:
        for name in ("pyproject.toml", "pyproject.toml.jinja"):
            candidate = directory / name
            if candidate.is_file():
                found = _LINE_LENGTH.search(candidate.read_text(errors="replace"))
                if found:
                    return int(found.group(1))
    return DEFAULT_LINE_LENGTH


def _mentions(text: str) -> bool:
    return re.search(r"(?<![\w.\-/])(httpx|httpcore)\b(?!2)", text) is not None


def convert(text: str, limit: int = DEFAULT_LINE_LENGTH) -> tuple[str, bool]:
    """``text`` moved to httpx2, and whether it had to keep its code (``httpx2 as httpx``)."""
    if not _mentions(text):
        return text, False
    fitted = _fit(text, _rewrite(text, uses=True), limit)
    if fitted is not None:
        return fitted, False
    return _rewrite(text, uses=False), True


def python_sources(paths: list[Path]) -> Iterator[Path]:
    """The Python sources under ``paths``: ``.py``, ``.pyi`` and their ``.jinja`` templates,
    Copier's conditional names included (``{% if x %}users.py{% endif %}``)."""
    for path in paths:
        if path.is_file():
            yield path
            continue
        if not path.is_dir():
            msg = f"{path}: no such file or directory"
            raise SystemExit(msg)
        for directory, subdirectories, files in os.walk(path):
            subdirectories[:] = sorted(d for d in subdirectories if d not in SKIPPED_DIRECTORIES)
            for name in sorted(files):
                if _PYTHON_NAME.search(_JINJA_TAG.sub("", name)):
                    yield Path(directory) / name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Move Python sources from httpx to httpx2 (idempotent).",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="directories or files to convert")
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a file would change"
    )
    args = parser.parse_args(argv)
    versions = "{} -> {}".format(
        os.environ.get("VERSION_PEP440_FROM", "?"), os.environ.get("VERSION_PEP440_TO", "?")
    )
    in_copier = "VERSION_PEP440_TO" in os.environ
    label = f"migration 0.3.0 ({versions})" if in_copier else "httpx2 codemod"
    changed: list[Path] = []
    for source in python_sources(args.paths):
        text = source.read_text(encoding="utf-8")
        new, aliased = convert(text, line_length(source))
        if new == text:
            continue
        changed.append(source)
        note = " (kept its code: imports httpx2 as httpx; a line would be too long)"
        print(f"{label}: {source}: httpx -> httpx2{note if aliased else ''}")
        if not args.check:
            source.write_text(new, encoding="utf-8")
    if not changed:
        print(f"{label}: no Python source uses httpx; nothing to change")
    elif in_copier:
        print(f"{label}: moved {len(changed)} file(s) to httpx2; see docs/upgrading.md")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
