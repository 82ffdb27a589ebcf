"""The apps the benchmark serves under granian (``--servers uvicorn,granian``): granian's
``--factory`` targets, built as they are under uvicorn, so that only the server differs.

    granian --interface asgi --factory bench.granian_apps:rendered   (the repository on PYTHONPATH)

- ``rendered``: the rendered service's app, made as ``python -m <package>`` makes it:
  ``create_app()`` from the environment's settings, then the startup objects frozen
  (``gc.freeze``). ``BENCH_PACKAGE`` names the package. Under granian the template's
  ``__main__`` and ``core/server.py`` do not run: the shutdown delay is not there
  (docs/decisions/0014-asgi-server.md).
- ``gateway``: a hand-written gateway of bench/gateways.py, ``BENCH_GATEWAY`` (C to G) against
  ``BENCH_DOWNSTREAM``, nothing frozen, as under uvicorn.

Granian imports the target in its worker process, so the app is built once, where it serves.
"""

from __future__ import annotations

import gc
import importlib
import os

from fastapi import FastAPI

from bench.gateways import build


def rendered() -> FastAPI:
    main = importlib.import_module(f"{os.environ['BENCH_PACKAGE']}.main")
    app: FastAPI = main.create_app()
    gc.collect()
    gc.freeze()
    return app


def gateway() -> FastAPI:
    return build(
        os.environ["BENCH_GATEWAY"], os.environ["BENCH_DOWNSTREAM"], os.environ["BENCH_PACKAGE"]
    )
