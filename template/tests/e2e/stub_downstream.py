"""A programmable downstream for end-to-end tests and demos. Standard library only, so it runs
in a bare Python container as well as on the host.

    python stub_downstream.py --port 8001

Template-owned. Serves, for any method:

- the routes that ``stub_routes.py`` beside it declares (the service's own file: one route per
  downstream endpoint its e2e tests call). A route is a regular expression for the whole path
  (without the query string), the methods it serves and a function of a ``StubRequest``
  (method, path, query, the match, headers, body) that returns ``(status, body)`` or
  ``(status, body, headers)``: a body of ``bytes`` or ``str`` is sent as it is, ``None`` as
  nothing, anything else as JSON;
- ``/_platform/echo``, the platform's own route (its e2e tests call it): 200 with the method,
  path and body length it received;
- control endpoints (under ``/_stub``):

  - ``POST /_stub/program`` with JSON ``{"fail_next": N, "status": 503, "delay": 0.5}``:
    answer the next N calls with ``status``; delay every call by ``delay`` seconds.
  - ``GET /_stub/calls``: ``{"count": N, "last_headers": {...}, "calls": [...]}`` for the
    non-control calls, each call as its method, path, headers and body (text).
  - ``POST /_stub/reset``: forget the program and the calls.

Every request's body is read before it is answered, whatever the answer (a 404, a programmed
failure): an unread body would be parsed as the next request on the keep-alive connection.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

PLATFORM_ROUTE = "/_platform/echo"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
KEPT_CALLS = 100  # the most recent calls /_stub/calls reports


@dataclass(frozen=True)
class StubRequest:
    """What a route of ``stub_routes.py`` receives."""

    method: str
    path: str
    query: dict[str, list[str]]
    match: re.Match[str]
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


Answer = tuple[int, object] | tuple[int, object, Mapping[str, str]]
Route = Callable[[StubRequest], Answer]


@dataclass(frozen=True)
class _Route:
    pattern: re.Pattern[str]
    methods: frozenset[str]
    answer: Route


def _legacy(answer: Callable[[re.Match[str]], tuple[int, object]]) -> Route:
    """A route of a ``stub_routes.py`` from before methods: a function of the match alone."""
    return lambda request: answer(request.match)


def routes_from(declared: object) -> list[_Route]:
    """The routes ``stub_routes.ROUTES`` declares: a list of ``(pattern, methods, function)``,
    or, as older ``stub_routes.py`` files have it, a dict of GET routes given the match only."""
    if isinstance(declared, dict):
        return [
            _Route(re.compile(pattern), frozenset({"GET"}), _legacy(answer))
            for pattern, answer in declared.items()
        ]
    if not isinstance(declared, list):
        msg = f"stub_routes.ROUTES: a list of (pattern, methods, function), not {declared!r}"
        raise TypeError(msg)
    routes = []
    for pattern, methods, answer in declared:
        unknown = {method.upper() for method in methods} - set(METHODS)
        if unknown:
            msg = f"stub route {pattern!r}: unknown method(s) {sorted(unknown)}; use {METHODS}"
            raise ValueError(msg)
        routes.append(
            _Route(re.compile(pattern), frozenset(method.upper() for method in methods), answer)
        )
    return routes


def load_routes(path: Path) -> list[_Route]:
    """``ROUTES`` of the ``stub_routes.py`` at ``path``, loaded by path: the stub runs as a
    script, on the host and in a bare container, never as part of a package."""
    spec = importlib.util.spec_from_file_location("stub_routes", path)
    if spec is None or spec.loader is None or not path.is_file():
        msg = f"{path} is missing: the stub serves the routes it declares"
        raise RuntimeError(msg)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return routes_from(module.ROUTES)


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    fail_next: int = 0
    fail_status: int = 503
    delay: float = 0.0
    count: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)

    def reset(self) -> None:
        self.fail_next, self.fail_status, self.delay, self.count = 0, 503, 0.0, 0
        self.calls = []


class StubServer(ThreadingHTTPServer):
    """The stub: its routes, its program and the calls it saw."""

    daemon_threads = True
    # socketserver's default accept queue is 5: a burst of pooled connections from the service
    # overflows it, the kernel drops the SYNs, and the client's connect retry (1 s later) meets
    # the service's 1 s connect timeout. A real downstream listens with a deep backlog.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], routes: Iterable[_Route]) -> None:
        super().__init__(address, Handler)
        self.routes = list(routes)
        self.state = _State()


def _parts(answer: Answer) -> tuple[int, object, Mapping[str, str]]:
    """A route's answer as status, body and headers."""
    if len(answer) == 3:
        return answer
    return answer[0], answer[1], {}


def _encoded(body: object, headers: Mapping[str, str]) -> tuple[bytes, dict[str, str]]:
    """The body's bytes and the headers to send with them."""
    sent = {name.lower(): value for name, value in headers.items()}
    if body is None:
        return b"", sent
    if isinstance(body, bytes):
        sent.setdefault("content-type", "application/octet-stream")
        return body, sent
    if isinstance(body, str):
        sent.setdefault("content-type", "text/plain; charset=utf-8")
        return body.encode(), sent
    sent.setdefault("content-type", "application/json")
    return json.dumps(body).encode(), sent


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real downstream
    server: StubServer

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _read_body(self) -> bytes:
        """The whole request body: by Content-Length, or chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF after the chunk
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: object, headers: Mapping[str, str] | None = None) -> None:
        payload, sent = _encoded(body, headers or {})
        self.send_response(status)
        for name, value in sent.items():
            if name != "content-length":
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _control(self, method: str, path: str, body: bytes) -> None:
        state = self.server.state
        if method == "POST" and path == "/_stub/program":
            loaded = json.loads(body or b"{}")
            program = loaded if isinstance(loaded, dict) else {}
            with state.lock:
                state.fail_next = int(program.get("fail_next", 0))
                state.fail_status = int(program.get("status", 503))
                state.delay = float(program.get("delay", 0.0))
            self._send(200, {"programmed": program})
        elif method == "POST" and path == "/_stub/reset":
            with state.lock:
                state.reset()
            self._send(200, {"reset": True})
        elif method == "GET" and path == "/_stub/calls":
            with state.lock:
                last = state.calls[-1]["headers"] if state.calls else {}
                self._send(200, {"count": state.count, "last_headers": last, "calls": state.calls})
        else:
            self._send(404, {"error": "unknown control endpoint"})

    def _handle(self) -> None:
        body = self._read_body()  # first, whatever the answer
        method = self.command
        url = urlsplit(self.path)
        if url.path.startswith("/_stub/"):
            self._control(method, url.path, body)
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        state = self.server.state
        with state.lock:
            state.count += 1
            call: dict[str, Any] = {"method": method, "path": self.path, "headers": headers}
            call["body"] = body.decode(errors="replace")
            state.calls = [*state.calls[-(KEPT_CALLS - 1) :], call]
            failing = state.fail_next > 0
            if failing:
                state.fail_next -= 1
            status, delay = state.fail_status, state.delay
        if delay:
            time.sleep(delay)
        if failing:
            self._send(status, {"error": "programmed failure"})
            return
        if url.path == PLATFORM_ROUTE:
            self._send(200, {"method": method, "path": url.path, "body_bytes": len(body)})
            return
        allowed: set[str] = set()
        for route in self.server.routes:
            # The path without the query string; older stub_routes.py files matched it with.
            match = route.pattern.fullmatch(url.path) or route.pattern.fullmatch(self.path)
            if match is None:
                continue
            if method not in route.methods:
                allowed |= route.methods
                continue
            request = StubRequest(method, url.path, parse_qs(url.query), match, headers, body)
            self._send(*_parts(route.answer(request)))
            return
        if allowed:
            allow = {"allow": ", ".join(sorted(allowed))}
            self._send(405, {"error": f"{method} is not served here"}, allow)
            return
        self._send(404, {"error": "not found"})

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    routes = load_routes(Path(__file__).with_name("stub_routes.py"))
    server = StubServer((args.host, args.port), routes)
    print(f"stub downstream listening on {args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
