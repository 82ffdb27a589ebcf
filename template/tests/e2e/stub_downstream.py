"""A programmable downstream for end-to-end tests and demos. Standard library only, so it runs
in a bare Python container as well as on the host.

    python stub_downstream.py --port 8001

Serves ``GET /users/{id}`` as the users service would. Control endpoints (under ``/_stub``):

- ``POST /_stub/program`` with JSON ``{"fail_next": N, "status": 503, "delay": 0.5}``:
  answer the next N calls with ``status``; delay every call by ``delay`` seconds.
- ``GET /_stub/calls``: ``{"count": N, "last_headers": {...}}`` for the non-control calls.
- ``POST /_stub/reset``: forget the program and the counters.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_USER_PATH = re.compile(r"/users/(\d+)")


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
        match = _USER_PATH.fullmatch(self.path)
        if match is None:
            self._send_json(404, {"error": "not found"})
            return
        user_id = int(match.group(1))
        self._send_json(200, {"id": user_id, "name": f"User {user_id}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"stub downstream listening on {args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
