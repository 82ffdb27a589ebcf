"""A downstream that misbehaves on purpose, over a real socket on loopback.

It speaks just enough HTTP/1.1 by hand to break it in the ways real downstreams do: never
answer, reset mid-body, send malformed bytes, drip, send too much, send a decompression bomb,
send hostile Retry-After headers, flap. The fault suite (tests/test_faults.py) points a rendered
service at it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import socket
import struct
import sys
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import brotli

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

USER = b'{"id": 1, "name": "User 1"}'


def _response(status: str, body: bytes = b"", headers: tuple[str, ...] = ()) -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Content-Type: application/json"]
    return ("\r\n".join([*head, *headers]) + "\r\n\r\n").encode() + body


_MIB = 1 << 20
BOMB_SIZE = 1024 * _MIB
"""What a bomb decodes to: 1 GiB, from about 1 MiB or less on the wire."""
BOMB_ENCODINGS = ("gzip", "deflate", "br", "zstd")


def _deflate_zeros(decoded: int) -> bytes:
    """Raw deflate of ``decoded`` zero bytes (a multiple of 1 MiB): one compressed MiB, flushed
    so that it depends on nothing before it, repeated. Seconds, where compressing 1 GiB takes
    half a minute."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    segment = compressor.compress(bytes(_MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return segment * (decoded // _MIB) + compressor.flush(zlib.Z_FINISH)


@functools.cache
def bomb(encoding: str, decoded: int) -> bytes:
    """A valid body in ``encoding`` (gzip, deflate, br or zstd) that decodes to ``decoded``
    zero bytes (a multiple of 1 MiB), about 1 MiB or less on the wire for 1 GiB decoded."""
    zero = bytes(_MIB)
    if encoding in ("gzip", "deflate"):
        check = zlib.crc32 if encoding == "gzip" else zlib.adler32
        value = 0 if encoding == "gzip" else 1
        for _ in range(decoded // _MIB):
            value = check(zero, value)
        raw = _deflate_zeros(decoded)
        if encoding == "gzip":  # RFC 1952: header, deflate, CRC-32 and size
            return (
                b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
                + raw
                + struct.pack("<II", value, decoded & 0xFFFFFFFF)
            )
        return b"\x78\xda" + raw + struct.pack(">I", value)  # RFC 1950: zlib around deflate
    if encoding == "br":
        compressor = brotli.Compressor(quality=1)
        return b"".join(compressor.process(zero) for _ in range(decoded // _MIB)) + (
            compressor.finish()
        )
    if encoding == "zstd":
        zcompressor = zstd.ZstdCompressor(level=1)
        return b"".join(zcompressor.compress(zero) for _ in range(decoded // _MIB)) + (
            zcompressor.flush()
        )
    msg = f"no bomb for {encoding!r}; known: {', '.join(BOMB_ENCODINGS)}"
    raise ValueError(msg)


@dataclass
class FaultDownstream:
    """What the downstream does with each request (``mode``), and how many requests and
    connections it received."""

    mode: str = "ok"
    retry_after: str = ""
    delay: float = 0.0
    encoding: str = ""
    calls: int = 0
    connections: int = 0
    port: int = 0
    _flap: Iterator[bool] = field(default_factory=lambda: itertools.cycle([True, False]))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set(
        self, mode: str, *, retry_after: str = "", delay: float = 0.0, encoding: str = ""
    ) -> None:
        """Answer from now on as ``mode`` says (``bomb`` sends ``bomb(encoding, 1 GiB)``)."""
        with self._lock:
            self.mode, self.retry_after, self.delay = mode, retry_after, delay
            self.encoding, self.calls, self.connections = encoding, 0, 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    return
                with self._lock:
                    self.calls += 1
                    mode, retry_after, delay = self.mode, self.retry_after, self.delay
                    if mode == "bomb":
                        mode = f"bomb:{self.encoding}"
                if not await self._answer(mode, retry_after, delay, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            return
        finally:
            writer.close()

    async def _answer(
        self, mode: str, retry_after: str, delay: float, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection must end."""
        if delay:
            await asyncio.sleep(delay)
        if mode == "flap":
            mode = "ok" if next(self._flap) else "reset"
        if mode == "half":
            mode = "ok" if next(self._flap) else "503"
        if mode == "ok":
            writer.write(_response("200 OK", USER))
        elif mode == "503":
            writer.write(_response("503 Service Unavailable", b"{}"))
        elif mode == "retry_after":
            writer.write(
                _response("503 Service Unavailable", b"{}", (f"Retry-After: {retry_after}",))
            )
        elif mode == "hang":
            await asyncio.sleep(3600)
        elif mode == "reset":
            _reset(writer)
            return False
        elif mode == "reset_mid_body":
            writer.write(_response("200 OK", b"x" * 1000)[:-900])
            await writer.drain()
            _reset(writer)
            return False
        elif mode == "malformed":
            writer.write(b"HTTP/1.1 2OO NOT-A-STATUS\r\nthis is not a header\r\n\r\n")
            await writer.drain()
            return False
        elif mode == "drip":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            for _ in range(1000):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(0.2)
        elif mode == "huge_declared":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 52428800\r\n\r\n" + b"x" * 65536)
        elif mode.startswith("bomb:"):
            encoding = mode.removeprefix("bomb:")
            writer.write(
                _response("200 OK", bomb(encoding, BOMB_SIZE), (f"Content-Encoding: {encoding}",))
            )
        elif mode == "huge_chunked":
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
            for _ in range(800):  # 50 MB unless the client stops reading
                writer.write(chunk)
                await writer.drain()
            return False
        await writer.drain()
        return True


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST instead of FIN, as a crashed peer does."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@contextmanager
def fault_downstream() -> Iterator[FaultDownstream]:
    """Run a ``FaultDownstream`` on a loopback port in a background thread."""
    downstream = FaultDownstream()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Future[None] = loop.create_future()

    async def main() -> None:
        server = await asyncio.start_server(downstream._handle, "127.0.0.1", 0)
        downstream.port = server.sockets[0].getsockname()[1]
        started.set()
        await stop
        server.close()
        # Connections still held open (a hanging or dripping case) end with the server.
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield downstream
    finally:
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(10)
        loop.close()
