"""A fast downstream for the benchmark: a raw asyncio HTTP/1.1 server (uvloop when installed).

    python bench/stub.py --port 18001

It answers every ``GET /users/{id}`` with a small JSON user, keeps connections alive, and
answers ``POST`` requests (an OTLP trace export, for example) with an empty 200. It parses just
enough HTTP/1.1 for those requests, so that the downstream is never what limits a scenario:
one core serves tens of thousands of requests per second with it, far more than any gateway in
the benchmark sends. The end-to-end suite's stub (a thread per connection) is programmable but
an order of magnitude slower, so the benchmark does not use it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

_HEAD_END = b"\r\n\r\n"


def _user_response(path: bytes) -> bytes:
    user_id = path.rsplit(b"/", 1)[-1]
    if not user_id.isdigit():
        return _response(404, b'{"detail":"not found"}')
    body = b'{"id":%s,"name":"user-%s","email":"user-%s@example.com"}' % (user_id, user_id, user_id)
    return _response(200, body)


def _response(status: int, body: bytes) -> bytes:
    reason = b"OK" if status == 200 else b"Not Found"
    return b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        status,
        reason,
        len(body),
        body,
    )


_EMPTY_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"


class StubProtocol(asyncio.Protocol):
    """One keep-alive connection; requests may arrive pipelined or split across reads."""

    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        out = []
        while True:
            end = self.buffer.find(_HEAD_END)
            if end < 0:
                break
            head = self.buffer[:end]
            length = 0
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                line_end = lower.find(b"\r\n", at + 2)
                value = lower[at + 17 : line_end if line_end >= 0 else len(lower)]
                length = int(value.strip() or 0)
            total = end + 4 + length
            if len(self.buffer) < total:
                break  # the body has not all arrived yet
            self.buffer = self.buffer[total:]
            method, _, rest = head.partition(b" ")
            path = rest.split(b" ", 1)[0]
            out.append(_EMPTY_OK if method != b"GET" else _user_response(path))
        if out and self.transport is not None:
            self.transport.write(b"".join(out))


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StubProtocol, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
