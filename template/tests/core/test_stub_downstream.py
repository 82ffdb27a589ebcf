"""The e2e stub (``tests/e2e/stub_downstream.py``) serves any method to the service's routes,
always reads the request body, and still serves ``stub_routes.py`` files of the older form."""

from __future__ import annotations

import http.client
import json
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.stub_downstream import PLATFORM_ROUTE, StubServer, load_routes, routes_from

ROUTES = """
from __future__ import annotations

ROUTES = []


def route(pattern, *, methods=("GET",)):
    def register(answer):
        ROUTES.append((pattern, methods, answer))
        return answer

    return register


@route(r"/payments", methods=["POST"])
def pay(request):
    seen = {
        "method": request.method,
        "key": request.headers.get("idempotency-key"),
        "amount": request.json()["amount"],
        "query": request.query,
    }
    return 201, seen, {"Location": "/payments/1"}


@route(r"/payments/(\\d+)")
def payment(request):
    return 200, {"id": int(request.match.group(1))}


@route(r"/payments/(\\d+)", methods=["DELETE"])
def cancel(request):
    return 204, None


@route(r"/raw", methods=["PUT"])
def raw(request):
    return 200, request.body[::-1]
"""

LEGACY_ROUTES = """
import re

ROUTES = {}


def route(pattern):
    def register(answer):
        ROUTES[pattern] = answer
        return answer

    return register


@route(r"/users/(\\d+)")
def user(match: re.Match) -> tuple[int, object]:
    return 200, {"id": int(match.group(1))}
"""

Connect = Callable[[str], http.client.HTTPConnection]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[str], http.client.HTTPConnection]]:
    """``serve(routes_source)``: a keep-alive connection to a stub serving those routes."""
    servers: list[StubServer] = []
    connections: list[http.client.HTTPConnection] = []

    def start(source: str) -> http.client.HTTPConnection:
        path = tmp_path / f"stub_routes_{len(servers)}.py"
        path.write_text(textwrap.dedent(source))
        server = StubServer(("127.0.0.1", 0), load_routes(path))
        servers.append(server)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        connections.append(connection)
        return connection

    yield start
    for connection in connections:
        connection.close()
    for server in servers:
        server.shutdown()
        server.server_close()


def _call(
    connection: http.client.HTTPConnection,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    payload = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, payload


def _json(payload: bytes) -> Any:
    return json.loads(payload)


def test_a_route_gets_method_match_headers_and_body_and_answers_status_headers_body(
    serve: Connect,
) -> None:
    connection = serve(ROUTES)
    body = json.dumps({"amount": 12}).encode()
    status, headers, payload = _call(
        connection, "POST", "/payments?currency=EUR", body, {"Idempotency-Key": "k-1"}
    )
    assert status == 201
    assert headers["location"] == "/payments/1"
    assert headers["content-type"] == "application/json"
    assert _json(payload) == {
        "method": "POST",
        "key": "k-1",
        "amount": 12,
        "query": {"currency": ["EUR"]},
    }
    # One connection throughout: every answer left it ready for the next request.
    assert _json(_call(connection, "GET", "/payments/7")[2]) == {"id": 7}
    status, headers, payload = _call(connection, "DELETE", "/payments/7")
    assert (status, payload, "content-type" in headers) == (204, b"", False)
    assert _call(connection, "PUT", "/raw", b"abc")[2] == b"cba"
    assert _call(connection, "HEAD", "/payments/7")[0] == 405


def test_every_body_is_read_whatever_the_answer(serve: Connect) -> None:
    connection = serve(ROUTES)
    body = b"x" * 5000
    # Unknown path, wrong method, programmed failure: the body is read all the same, so the
    # next request on the connection parses (an unread body would be read as one).
    assert _call(connection, "POST", "/nowhere", body)[0] == 404
    assert _call(connection, "PATCH", "/payments/1", body)[0] == 405
    program = json.dumps({"fail_next": 1}).encode()
    assert _call(connection, "POST", "/_stub/program", program)[0] == 200
    assert _call(connection, "POST", "/payments", body)[0] == 503
    assert _call(connection, "GET", "/payments/3")[0] == 200
    calls = _json(_call(connection, "GET", "/_stub/calls")[2])
    assert calls["count"] == 4
    assert [call["method"] for call in calls["calls"]] == ["POST", "PATCH", "POST", "GET"]
    assert calls["calls"][2]["body"] == "x" * 5000


def test_a_chunked_body_is_read(serve: Connect) -> None:
    connection = serve(ROUTES)
    connection.putrequest("PUT", "/raw")
    connection.putheader("Transfer-Encoding", "chunked")
    connection.endheaders()
    connection.send(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    response = connection.getresponse()
    assert response.read() == b"edcba"
    assert _call(connection, "GET", "/payments/1")[0] == 200


def test_the_platform_route_answers_any_method(serve: Connect) -> None:
    connection = serve(ROUTES)
    status, _, payload = _call(connection, "POST", PLATFORM_ROUTE, b"12345")
    assert status == 200
    assert _json(payload) == {"method": "POST", "path": PLATFORM_ROUTE, "body_bytes": 5}
    assert _json(_call(connection, "GET", "/_stub/calls")[2])["count"] == 1


def test_program_delay_and_reset(serve: Connect) -> None:
    connection = serve(ROUTES)
    program = json.dumps({"fail_next": 2, "status": 502}).encode()
    assert _call(connection, "POST", "/_stub/program", program)[0] == 200
    assert [_call(connection, "GET", "/payments/1")[0] for _ in range(3)] == [502, 502, 200]
    assert _call(connection, "POST", "/_stub/reset", b"{}")[0] == 200
    assert _json(_call(connection, "GET", "/_stub/calls")[2]) == {
        "count": 0,
        "last_headers": {},
        "calls": [],
    }


def test_older_stub_routes_files_still_serve_get(serve: Connect) -> None:
    connection = serve(LEGACY_ROUTES)
    assert _json(_call(connection, "GET", "/users/4")[2]) == {"id": 4}
    assert _call(connection, "POST", "/users/4", b"{}")[0] == 405


def test_bad_routes_are_refused_with_a_reason() -> None:
    with pytest.raises(ValueError, match="unknown method"):
        routes_from([("/x", ["FETCH"], lambda request: (200, None))])
    with pytest.raises(TypeError, match="a list of"):
        routes_from("nonsense")
