"""In-process cost breakdown of the rendered service's request path, without sockets.

    <render>/.venv/bin/python bench/micro.py --package my_service [--json out.json]

Runs ``GET /users/{id}`` through the rendered app's ASGI stack (middleware, FastAPI, the example
route, the shared httpx client and its outbound chain) with the network replaced by a transport
that answers at once, and measures CPU microseconds per request. Each variant turns one layer
off (or swaps it for a cheaper form) in the same process, and the variants are interleaved over
several rounds; the difference to the full stack is that layer's cost per request. Sockets,
uvicorn and the connection pool are measured by the load test instead (bench/run.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import io
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
from opentelemetry import trace

BODY = b'{"id":3,"name":"user-3","email":"user-3@example.com"}'
DOWNSTREAM = "http://users.bench"


class InstantTransport(httpx2.AsyncBaseTransport):
    """The downstream's answer, without a network."""

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            200,
            headers=[("content-type", "application/json"), ("content-length", str(len(BODY)))],
            stream=httpx2.ByteStream(BODY),
            request=request,
        )


SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/users/3",
    "raw_path": b"/users/3",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1:8080"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 40000),
    "server": ("127.0.0.1", 8080),
    "state": {},
}


class Bench:
    """One rendered package, imported once; variants patch it and restore it."""

    def __init__(self, package: str) -> None:
        self.pkg = package
        self.mod = {
            name: importlib.import_module(f"{package}.{name}") for name in ("main", "settings")
        } | {
            name: importlib.import_module(f"{package}.core.{name}")
            for name in ("http_client", "transport", "middleware", "log")
        }
        self.log_stream = io.StringIO()

    def settings(self, **overrides: Any) -> Any:
        data: dict[str, Any] = {
            "log_format": "json",
            "users_service": {"base_url": DOWNSTREAM},
            "http": {"transport": "httpx"},
        }
        data.update(overrides)
        return self.mod["settings"].Settings(_env_file=None, **data)

    def app(self, settings: Any) -> Any:
        app = self.mod["main"].create_app(settings)
        self.mod["log"].configure_logging(settings, stream=self._sink())
        app.state.http_client = self.mod["http_client"].build_http_client(
            settings,
            tracer=app.state.tracing.tracer,
            observer=app.state.observer,
            base_transport=InstantTransport(),
        )
        # What the users router's lifespan builds over the shared client (no lifespan runs here).
        users = importlib.import_module(f"{self.pkg}.users")
        app.state.users_client = users.UsersClient(app.state.http_client, DOWNSTREAM)
        return app

    def _sink(self) -> Any:
        # A file on disk, as a container's stdout would be, but emptied between variants.
        self.log_stream = open("/dev/null", "w")  # noqa: SIM115 - closed by the caller's exit
        return self.log_stream


async def _drive(app: Any, n: int) -> float:
    """CPU seconds for ``n`` sequential requests through ``app``."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"status {message['status']}")

    started = time.process_time()
    for _ in range(n):
        await app(dict(SCOPE), receive, send)
    del sent
    return time.process_time() - started


@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


class _Uuid4Secrets:
    """Stands in for the ``secrets`` module in the request middleware: ids as uuid4 made them."""

    @staticmethod
    def token_hex(_: int) -> str:
        return uuid.uuid4().hex


async def _read_with_aread(response: httpx2.Response) -> None:
    """What the shared client's ``send`` did before it read the body straight from the stream."""
    try:
        await response.aread()
    except BaseException:
        await response.aclose()
        raise


def variants(b: Bench) -> dict[str, Callable[[], contextlib.AbstractContextManager[Any]]]:
    """name -> a context manager that builds the app for that variant and yields it."""

    @contextlib.contextmanager
    def build(**overrides: Any) -> Iterator[Any]:
        yield b.app(b.settings(**overrides))

    @contextlib.contextmanager
    def no_tracing() -> Iterator[Any]:
        # Every span a no-op: what the service would cost with no tracing at all (ids, spans,
        # context attach/detach and traceparent injection are all gone).
        app = b.app(b.settings())
        noop = trace.NoOpTracer()
        app.state.http_client._transport._tracer = noop
        stack = app.build_middleware_stack()
        layer = stack
        while layer is not None and not hasattr(layer, "tracer"):
            layer = getattr(layer, "app", None)
        assert layer is not None, "RequestMiddleware not found"
        layer.tracer = noop
        app.middleware_stack = stack
        yield app

    @contextlib.contextmanager
    def no_stamina() -> Iterator[Any]:
        # One attempt, no retry loop: what the success path costs without it. (The loop was
        # stamina's; it is the transport's own now, and the name stays for the results.)
        transport = b.mod["transport"]

        async def no_retry(self: Any, *args: Any) -> Any:
            raise args[-1]  # the first attempt's failure, as when no retry follows

        with patched(transport.OutboundTransport, "_retry", no_retry):
            yield b.app(b.settings())

    @contextlib.contextmanager
    def no_metrics() -> Iterator[Any]:
        telemetry = importlib.import_module(f"{b.pkg}.core.telemetry")
        app = b.app(b.settings())
        null = telemetry.NULL_OBSERVER
        app.state.http_client._transport._observer = null
        app.state.http_client._transport.downstreams._observer = null
        stack = app.build_middleware_stack()
        layer = stack
        while layer is not None and not hasattr(layer, "observer"):
            layer = getattr(layer, "app", None)
        assert layer is not None
        layer.observer = null
        app.middleware_stack = stack
        yield app

    @contextlib.contextmanager
    def undone(obj: Any, name: str, value: Any) -> Iterator[Any]:
        # One of the template's own savings undone, for the length of the variant.
        with patched(obj, name, value):
            yield b.app(b.settings())

    shared = b.mod["http_client"]._SharedClient
    middleware = b.mod["middleware"]

    return {
        "full stack": lambda: build(),
        "logging off (level WARNING)": lambda: build(log_level="WARNING"),
        "tracing unsampled (ratio 0)": lambda: build(tracing={"sample_ratio": 0.0}),
        "tracing off (no-op tracer)": no_tracing,
        "metrics off": no_metrics,
        "retry loop off (one attempt, no stamina)": no_stamina,
        "UNDONE: httpx2's own send for every call": lambda: undone(
            shared, "send", httpx2.AsyncClient.send
        ),
        "UNDONE: a new cookie jar on each access": lambda: undone(
            shared, "cookies", property(lambda _: b.mod["http_client"]._NoCookies())
        ),
        "UNDONE: request ids from uuid4": lambda: undone(middleware, "secrets", _Uuid4Secrets()),
        "UNDONE: the body read through httpx2's aread": lambda: undone(
            b.mod["http_client"], "_read_body", _read_with_aread
        ),
    }


async def measure(
    b: Bench, rounds: int, n: int, only: list[str] | None = None
) -> dict[str, dict[str, float]]:
    table = {k: v for k, v in variants(b).items() if not only or k in only or k == "full stack"}
    samples: dict[str, list[float]] = {name: [] for name in table}
    for round_ in range(rounds):
        names = list(table)
        names = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in names:
            with table[name]() as app:
                await _drive(app, n // 10)  # warm up: caches, lazy imports
                # As the service does at startup (gc.freeze in __main__): full collections of
                # this process's long-lived objects would otherwise land in random samples.
                gc.collect()
                gc.freeze()
                try:
                    samples[name].append(await _drive(app, n) / n * 1e6)
                finally:
                    gc.unfreeze()
                await app.state.http_client.aclose()
        print(f"  micro: round {round_ + 1}/{rounds} done", file=sys.stderr, flush=True)
    full = statistics.median(samples["full stack"])
    return {
        name: {
            "us_per_request": round(statistics.median(values), 1),
            "saves_us": round(full - statistics.median(values), 1) if name != "full stack" else 0,
        }
        for name, values in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--json", dest="json_path")
    parser.add_argument(
        "--only", action="append", help="measure only this variant (and the full stack)"
    )
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    result = asyncio.run(measure(Bench(args.package), args.rounds, args.requests, args.only))
    for name, row in result.items():
        print(f"{name:45s} {row['us_per_request']:8.1f} us/request  saves {row['saves_us']:6.1f}")
    if args.json_path:
        with open(args.json_path, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
