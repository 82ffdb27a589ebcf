"""`make demo`: render a service with the default answers, start it in front of the stub
downstream it ships, call GET /users/1 with a traceparent, and show the response and the two
correlated JSON log lines (the inbound request and the outbound call)."""

from __future__ import annotations

import json
import secrets
import sys
import tempfile
import urllib.request
from pathlib import Path

from tests.support import render, run, serve


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="demo-") as tmp:
        project = Path(tmp) / "my-service"
        _say(f"copier copy (default answers) -> {project}")
        render(project)
        _say("make install (uv sync)")
        run(["make", "install"], cwd=project)

        trace_id = secrets.token_hex(16)
        traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
        with serve(project, "my_service") as service:
            _say(f"GET {service.base_url}/users/1 with traceparent: {traceparent}")
            request = urllib.request.Request(
                f"{service.base_url}/users/1", headers={"traceparent": traceparent}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                print(f"HTTP {response.status} x-request-id={response.headers['x-request-id']}")
                print(response.read().decode())
            with urllib.request.urlopen(f"{service.stub_url}/_stub/calls") as calls:
                seen = json.load(calls)["last_headers"]
            print(
                f"the downstream saw traceparent={seen.get('traceparent')} "
                f"user-agent={seen.get('user-agent')}"
            )
        lines = service.log_lines()
        wanted = [
            line
            for line in lines
            if line.get("event") in ("request", "outbound.response")
            and line.get("path", line.get("url", "")).endswith("/users/1")
        ]
        _say("JSON log lines for that request")
        for line in wanted:
            print(json.dumps(line))
        closed = [line for line in lines if line.get("event") == "http_client.closed"]
        _say("shutdown")
        print(json.dumps(closed[-1]) if closed else "no http_client.closed line!")

    events = {line["event"]: line for line in wanted}
    ok = (
        {"request", "outbound.response"} <= events.keys()
        and events["request"]["trace_id"] == events["outbound.response"]["trace_id"] == trace_id
        and events["request"]["request_id"] == events["outbound.response"]["request_id"]
        and trace_id in seen.get("traceparent", "")
        and bool(closed)
    )
    _say(
        "same trace_id in the request line, the outbound line and at the downstream: "
        + ("yes" if ok else "NO")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
