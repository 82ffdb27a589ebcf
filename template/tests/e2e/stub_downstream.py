"""A programmable downstream for end-to-end tests and demos. Standard library only, so it runs
in a bare Python container as well as on the host.

    python stub_downstream.py --port 8001

Serves the routes that ``stub_routes.py`` beside it declares (the service's own file: one route
per downstream endpoint its e2e tests call; the example serves ``GET /users/{id}``). Control
endpoints (under ``/_stub``):

- ``POST /_stub/program`` with JSON ``{"fail_next": N, "status": 503, "delay": 0.5}``:
  answer the next N calls with ``status``; delay every call by ``delay`` seconds.
- ``GET /_stub/calls``: ``{"count": N, "last_headers": {...}}`` for the non-control calls.
- ``POST /_stub/reset``: forget the program and the counters.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _load_routes() -> dict[str, Any]:
    """``ROUTES`` of ``stub_routes.py`` beside this file, loaded by path: the stub runs as a
    script, on the host and in a bare container, never as part of a package."""
    spec = importlib.util.spec_from_file_location(
        "stub_routes", Path(__file__).with_name("stub_routes.py")
    )
    if spec is None or spec.loader is None:  # pragma: no cover - the file ships with the stub
        msg = "stub_routes.py is missing next to stub_downstream.py"
        raise RuntimeError(msg)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    routes: dict[str, Any] = module.ROUTES
    return routes


ROUTES = [(re.compile(pattern), answer) for pattern, answer in _load_routes().items()]


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.fail_next = 0
        self.fail_status = 503
        self.delay = 0.0
        self.count = 0
        self.last_headers: dict[str, str] = {}


STATE = _State()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default accept queue is 5: a burst of pooled connections from the service
    # overflows it, the kernel drops the SYNs, and the client's connect retry (1 s later) meets
    # the service's 1 s connect timeout. A real downstream listens with a deep backlog.
    request_queue_size = 1024


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real downstream

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _send_json(self, status: int, body: object) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _read_json(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        loaded = json.loads(raw or b"{}")
        return loaded if isinstance(loaded, dict) else {}

    def do_POST(self) -> None:
        if self.path == "/_stub/program":
            program = self._read_json()
            with STATE.lock:
                STATE.fail_next = int(program.get("fail_next", 0))
                STATE.fail_status = int(program.get("status", 503))
                STATE.delay = float(program.get("delay", 0.0))
            self._send_json(200, {"programmed": program})
        elif self.path == "/_stub/reset":
            with STATE.lock:
                STATE.reset()
            self._send_json(200, {"reset": True})
        else:
            self._send_json(404, {"error": "unknown control endpoint"})

    def do_GET(self) -> None:
        if self.path == "/_stub/calls":
            with STATE.lock:
                self._send_json(200, {"count": STATE.count, "last_headers": STATE.last_headers})
            return
        with STATE.lock:
            STATE.count += 1
            STATE.last_headers = {name.lower(): value for name, value in self.headers.items()}
            failing = STATE.fail_next > 0
            if failing:
                STATE.fail_next -= 1
            status, delay = STATE.fail_status, STATE.delay
        if delay:
            time.sleep(delay)
        if failing:
            self._send_json(status, {"error": "programmed failure"})
            return
        for pattern, answer in ROUTES:
            match = pattern.fullmatch(self.path)
            if match is not None:
                self._send_json(*answer(match))
                return
        self._send_json(404, {"error": "not found"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    server = _Server((args.host, args.port), Handler)
    print(f"stub downstream listening on {args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
