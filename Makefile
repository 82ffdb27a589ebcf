# Two commands for a machine with only python3, git and make:
#   make demo   render a service and show it working
#   make test   run the template's tests
# Both bootstrap their tools into .venv (uv, copier, pytest) on first use.
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Renders call `uv` and `make`; the bootstrapped uv comes first on PATH.
export PATH := $(BIN):$(PATH)
# One uv cache for every render, so each render's `uv sync` is a local copy after the first.
export UV_CACHE_DIR ?= $(CURDIR)/.cache/uv
# Test workers: one per core and one more, since a worker often waits (containers, the
# renders' subprocesses): on 2 cores, 3 workers ran the suite in 657 s against 699 s for 2.
JOBS ?= $(shell echo $$(( $$(nproc) + 1 )))

.PHONY: help bootstrap demo test test-fast lint docs reference clean

help:  ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(VENV)/.bootstrapped: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r pyproject.toml
	touch $@

bootstrap: $(VENV)/.bootstrapped  ## Create .venv with uv, copier and pytest

demo: bootstrap  ## Render a service, run it against a stub downstream, show correlated logs
	$(BIN)/python -m tools.demo

# The e2e tests need a Docker engine and a base image that no registry has to serve:
# tests/docker/engine.sh provides both. In CI (CI=true or E2E_REQUIRED=1) its failure fails the
# run; elsewhere the e2e tests then skip, saying why. Python 3.14 and 3.15 come from Debian
# forky: tests/docker/rootfs.sh debootstraps the tree once (cached; engine.sh imports the image
# from it, so a second call only finds it) and the tests run its interpreters
# (harness/interpreters.py); in CI its failure fails the run, elsewhere those versions' tests skip.
test: bootstrap  ## Run the template tests (renders every variant, runs its workflow and e2e suite)
	@if env_out="$$(bash tests/docker/engine.sh)"; then eval "$$env_out"; \
	elif [ "$${CI:-}" = "true" ] || [ "$${E2E_REQUIRED:-}" = "1" ]; then \
	  echo "Docker engine setup failed, and the e2e tests are required here" >&2; exit 1; \
	else echo "No Docker engine: the e2e tests will be skipped" >&2; fi; \
	if ! bash tests/docker/rootfs.sh >/dev/null; then \
	  if [ "$${CI:-}" = "true" ]; then echo "The Debian tree with Python 3.14 and 3.15 could not be built" >&2; exit 1; fi; \
	  echo "No Debian tree: the tests of Python 3.14 and 3.15 will be skipped" >&2; fi; \
	$(BIN)/python -m pytest -n $(JOBS) --dist loadgroup $(PYTEST_ARGS)

# The tests that run no Copier (pytest marker `render`, which tests/test_layout.py keeps true):
# the fleet tool's and the harness's own checks, the changelog and migration rules, the docs
# build. They need no Docker engine and no Debian tree.
test-fast: bootstrap  ## Run only the tests that run no Copier (-m "not render"): about 20 s
	$(BIN)/python -m pytest -n $(JOBS) --dist loadgroup -m "not render" $(PYTEST_ARGS)

lint: bootstrap  ## Lint the repository's own Python (harness, tests, hooks, fleet, tools, bench)
	$(BIN)/ruff check harness tests hooks fleet tools bench
	$(BIN)/ruff format --check harness tests hooks fleet tools bench

# The documentation site (mkdocs.yml, docs/): strict, so a warning, a broken link or a page left
# out of the navigation fails the build. `make test` builds it too (tests/test_docs.py).
SITE_DIR ?= site

docs: bootstrap  ## Build the documentation site into site/ (MkDocs, --strict)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir "$(SITE_DIR)"

# The default render runs on Python 3.14, which tests/docker/rootfs.sh provides where the machine
# has none (it is cached; as for `make test`).
DEBIAN_PYTHONS_TREE = bash tests/docker/rootfs.sh >/dev/null \
	|| echo "No Debian tree with Python 3.14 and 3.15 (tests/docker/rootfs.sh, as root): uv looks for them itself" >&2

reference: bootstrap  ## Regenerate docs/reference/ from copier.yml and a default render
	@$(DEBIAN_PYTHONS_TREE)
	$(BIN)/python -m tools.docs_reference

# `make bench` also installs matplotlib and py-spy into .venv, and wrk (Debian's package) when
# it is missing and the user is root. BENCH_ARGS=--quick makes a short smoke run.
.PHONY: bench
$(VENV)/.bench-tools: $(VENV)/.bootstrapped bench/requirements.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python -r bench/requirements.txt
	touch $@

bench: bootstrap $(VENV)/.bench-tools  ## Benchmark the rendered service against hand-written gateways (~9 min)
	@$(DEBIAN_PYTHONS_TREE)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean:  ## Remove the bootstrapped tools and caches
	rm -rf $(VENV) .cache .pytest_cache
