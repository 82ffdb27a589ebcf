"""The repository's Python is layered, and its `render` marker is true; both read from the source
(ast), so these tests render nothing and take a fraction of a second.

- ``tests/`` is nobody's library: the benchmark, the tools, the fleet tool and the harness they
  share (``harness/``) never import ``tests``, and the harness imports none of its users.
- Every test that runs Copier on a template (a render, or an update, of this template, a release
  of it or a synthetic one) carries the ``render`` marker, in its module's ``pytestmark`` or on
  the test itself, so that ``-m 'not render'`` (``make test-fast``) is the quick slice it claims.
  A test renders when it, a function it calls, or a fixture it asks for (transitively, across
  ``harness``, ``tools``, ``fleet``, ``bench`` and ``tests``) refers to ``copier.run_copy``,
  ``run_update`` or ``run_recopy``, or spells a ``copier copy``/``update`` command. What a
  subprocess does beyond that is not seen: a test that renders only through another command
  (``make demo``, a how-to guide's block) is marked by hand.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from harness.support import REPO_ROOT, working_tree_files

# Packages whose modules the render analysis follows (anything else is a library's business).
PACKAGES = ("harness", "tests", "tools", "fleet", "bench", "hooks")
COPIER_COMMAND = ("copier", "__main__")  # a command list that runs `copier copy` or `update`
COPIER_ENTRY_POINTS = {
    ("copier", "run_copy"),
    ("copier", "run_update"),
    ("copier", "run_recopy"),
    COPIER_COMMAND,
}


def _python_files() -> dict[str, Path]:
    """This repository's Python outside ``template/`` (renders have their own ``tests``), by
    dotted module name."""
    found = {}
    for relative in working_tree_files():
        path = Path(relative)
        if path.suffix != ".py" or path.parts[0] not in PACKAGES:
            continue
        parts = path.with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = REPO_ROOT / path
    return found


@dataclass(frozen=True)
class Source:
    """A module of this repository, parsed."""

    path: Path
    tree: ast.Module

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"


def _parse(files: dict[str, Path]) -> dict[str, Source]:
    return {
        name: Source(path, ast.parse(path.read_text(), str(path))) for name, path in files.items()
    }


SOURCES = _parse(_python_files())


def _imported_modules(
    module: str, sources: dict[str, Source] = SOURCES
) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in ``module``, relative ones resolved; for ``from X
    import y``, both ``X`` and ``X.y`` (which may be a module)."""
    for node in ast.walk(sources[module].tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node, sources)
            yield node.lineno, source
            for alias in node.names:
                yield node.lineno, f"{source}.{alias.name}"


def _absolute(module: str, node: ast.ImportFrom, sources: dict[str, Source]) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")
    keep = len(package) - node.level + (1 if sources[module].is_package else 0)
    return ".".join([*package[:keep], *([node.module] if node.module else [])])


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _offenders(importers: list[str], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{SOURCES[name].path.relative_to(REPO_ROOT)}:{line} imports {imported}"
        for name in importers
        for line, imported in _imported_modules(name)
        if any(_within(imported, package) for package in forbidden)
    ]


def test_nothing_outside_tests_imports_tests() -> None:
    outside = [name for name in SOURCES if not _within(name, "tests")]
    assert {"harness", "bench.run", "tools.docs_reference", "fleet.cli"} <= set(outside)
    assert _offenders(outside, ("tests",)) == [], (
        "tests/ is not a library: move what the others need to harness/"
    )
    # Nor a program the Makefile runs (`make demo` is tools/demo.py).
    commands = [line for line in (REPO_ROOT / "Makefile").read_text().splitlines() if "-m " in line]
    assert [line for line in commands if "-m tests" in line] == []
    assert any("-m tools.demo" in line for line in commands)


def test_the_harness_imports_none_of_its_users() -> None:
    harness = [name for name in SOURCES if _within(name, "harness")]
    assert {"harness.support", "harness.interpreters", "harness.releases"} <= set(harness)
    assert _offenders(harness, ("tests", "bench", "tools")) == []


# --- the render marker -----------------------------------------------------------------------


@dataclass
class Function:
    """A top-level function (what it nests counts as its body), and the functions it names."""

    module: str
    node: ast.FunctionDef | ast.AsyncFunctionDef
    names: set[tuple[str, str]] = field(default_factory=set)

    @property
    def is_fixture(self) -> bool:
        return any(_is_pytest(_callee(d), "fixture") for d in self.node.decorator_list)

    @property
    def is_test(self) -> bool:
        return (
            self.module.startswith("tests.test_")
            and self.node.name.startswith("test")
            and not self.is_fixture
        )

    @property
    def has_render_mark(self) -> bool:
        return any(_is_pytest(_callee(d), "mark", "render") for d in self.node.decorator_list)

    @property
    def parameters(self) -> list[str]:
        arguments = self.node.args
        return [a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]]


def _callee(decorator: ast.expr) -> ast.expr:
    return decorator.func if isinstance(decorator, ast.Call) else decorator


def _is_pytest(node: ast.expr, *chain: str) -> bool:
    """Whether ``node`` is ``pytest.<chain>``: ``pytest.fixture``, ``pytest.mark.render``."""
    for name in reversed(chain):
        if not (isinstance(node, ast.Attribute) and node.attr == name):
            return False
        node = node.value
    return isinstance(node, ast.Name) and node.id == "pytest"


def _bindings(module: str, sources: dict[str, Source]) -> dict[str, tuple[str, str] | str]:
    """What each name that ``module`` imports or defines stands for: a function, as
    ``(module, name)``, or a module, by its dotted name."""
    bound: dict[str, tuple[str, str] | str] = {}
    tree = sources[module].tree
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    bound[top] = top
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node, sources)
            for alias in node.names:
                dotted = f"{source}.{alias.name}"
                bound[alias.asname or alias.name] = (
                    dotted if dotted in sources else (source, alias.name)
                )
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            bound[node.name] = (module, node.name)
    return bound


def _is_copier_command(node: ast.AST) -> bool:
    """Whether ``node`` is a command list that runs Copier: ``[..., "copier", "copy", ...]``."""
    if not isinstance(node, ast.List):
        return False
    words = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return "copier" in words and bool({"copy", "update", "recopy"} & set(words))


def _functions(sources: dict[str, Source]) -> dict[tuple[str, str], Function]:
    functions = {}
    for module, source in sources.items():
        bound = _bindings(module, sources)
        for node in source.tree.body:
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            function = Function(module, node)
            if any(_is_copier_command(inner) for inner in ast.walk(node)):
                function.names.add(COPIER_COMMAND)
            for inner in ast.walk(node):
                if isinstance(inner, ast.Name) and isinstance(bound.get(inner.id), tuple):
                    function.names.add(bound[inner.id])  # type: ignore[arg-type]
                elif isinstance(inner, ast.Attribute) and isinstance(inner.value, ast.Name):
                    target = bound.get(inner.value.id)
                    if isinstance(target, str):  # module.function
                        function.names.add((target, inner.attr))
            functions[module, node.name] = function
    return functions


def _rendering(functions: dict[tuple[str, str], Function]) -> set[tuple[str, str]]:
    """The functions (tests and fixtures among them) that run Copier: they name a Copier entry
    point, a function that does, or ask for a fixture that does. A test's fixtures are its
    module's own, else tests/conftest.py's, as pytest finds them here."""

    def fixture(module: str, name: str) -> tuple[str, str] | None:
        for owner in (module, "tests.conftest"):
            found = functions.get((owner, name))
            if found is not None and found.is_fixture:
                return owner, name
        return None

    rendering = set(COPIER_ENTRY_POINTS)
    grown = True
    while grown:
        grown = False
        for key, function in functions.items():
            asked = {fixture(function.module, name) for name in function.parameters}
            if key not in rendering and (function.names | asked) & rendering:
                rendering.add(key)
                grown = True
    return rendering


def _marked_modules(sources: dict[str, Source]) -> set[str]:
    """Modules whose ``pytestmark`` includes ``pytest.mark.render``."""
    marked = set()
    for module, source in sources.items():
        for node in source.tree.body:
            if not isinstance(node, ast.Assign) or not any(
                isinstance(name, ast.Name) and name.id == "pytestmark" for name in node.targets
            ):
                continue
            values = [v for v in ast.walk(node.value) if isinstance(v, ast.expr)]
            if any(_is_pytest(value, "mark", "render") for value in values):
                marked.add(module)
    return marked


def _unmarked_renders(sources: dict[str, Source]) -> list[str]:
    functions = _functions(sources)
    rendering = _rendering(functions)
    marked = _marked_modules(sources)
    return sorted(
        f"{module.replace('.', '/')}.py::{name}"
        for (module, name), function in functions.items()
        if function.is_test
        and (module, name) in rendering
        and module not in marked
        and not function.has_render_mark
    )


def test_every_test_that_renders_carries_the_render_marker() -> None:
    rendering = _rendering(_functions(SOURCES))
    # The analysis sees through called functions and fixtures: a plain render, a module
    # fixture's copy of a release, the docs generator's default render.
    assert {
        ("tests.test_questions", "test_port_bounds_are_accepted"),
        ("tests.test_update", "test_every_released_version_updates_to_head"),
        ("tests.test_docs", "test_generated_reference_is_current"),
    } <= rendering, "the analysis no longer finds the renders it must"
    assert _unmarked_renders(SOURCES) == [], (
        "these tests run Copier without the render marker (`pytestmark = pytest.mark.render` in "
        "the module, or `@pytest.mark.render` on the test), so `make test-fast` would run them"
    )


PROBE = """\
import pytest
from harness.support import copy_project

def _service(path):
    return copy_project(path, path, "HEAD")

@pytest.fixture
def service(tmp_path):
    return _service(tmp_path)

def test_uses_it(service):
    assert service

def test_renders_nothing(tmp_path):
    assert tmp_path
"""


def _probe_renders(sources: dict[str, Source]) -> list[str]:
    return [test for test in _unmarked_renders(sources) if test.startswith("tests/test_probe.py")]


def test_a_render_through_a_function_and_a_fixture_needs_the_marker(tmp_path: Path) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    sources = {**SOURCES, **_parse({"tests.test_probe": probe})}
    assert _probe_renders(sources) == ["tests/test_probe.py::test_uses_it"]
    probe.write_text(PROBE.replace("def test_uses_it", "@pytest.mark.render\ndef test_uses_it"))
    assert _probe_renders({**SOURCES, **_parse({"tests.test_probe": probe})}) == []
    probe.write_text(PROBE + "\npytestmark = [pytest.mark.xdist_group('x'), pytest.mark.render]\n")
    assert _probe_renders({**SOURCES, **_parse({"tests.test_probe": probe})}) == []
