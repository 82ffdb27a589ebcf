"""Response bodies decoded with a bound: ``Content-Encoding`` is undone here, never by httpx2.

httpx2 decodes ``gzip``, ``deflate``, ``br`` and ``zstd`` without a limit on what comes out: a
few megabytes of gzip on the wire can decode to gigabytes in memory, and
``http.max_response_bytes`` counted only the bytes on the wire. The outbound transport decodes
instead, in pieces of at most ``PIECE`` bytes, so that it can count the decoded bytes as they
come out and stop at the limit (a decompression bomb costs about the limit in memory, not the
bomb's size). The decoded response carries no ``Content-Encoding`` or ``Content-Length`` (they
described the encoded body), so httpx2 passes the body through as it is.

The client advertises (``ACCEPT_ENCODING``) only what it can decode this way: ``gzip`` and
``deflate`` always; ``br`` with ``brotli`` or ``brotlicffi`` 1.2 or later (the first with an
output limit); ``zstd`` with the standard library's ``compression.zstd`` (Python 3.14) or
``backports.zstd``. A body in an encoding it did not advertise fails the call
(``UndecodableResponse``) rather than being decoded without a bound.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import httpx2

PIECE = 64 * 1024
"""The most decoded bytes one step of a decoder returns."""


class DecodedResponseTooLarge(httpx2.RemoteProtocolError):
    """The response body decodes to more than ``http.max_response_bytes`` (a decompression
    bomb, or a body too large once decoded); decoding stopped there, the connection was
    dropped."""


class UndecodableResponse(httpx2.DecodingError, httpx2.RemoteProtocolError):
    """The body is not valid in its ``Content-Encoding``, or is in an encoding the client did
    not accept. Also an ``httpx2.DecodingError``, which httpx2 raises for the same."""


class _Invalid(Exception):
    """The encoded data is corrupt (the library's own error, under one name)."""


class _Stage(Protocol):
    """One encoding being undone."""

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded pieces of ``data`` (each at most ``PIECE`` bytes)."""

    def finish(self) -> Iterator[bytes]:
        """What is left once the encoded body has ended."""


class _Zlib:
    """gzip (RFC 1952), or deflate: the zlib format (RFC 1950), or raw deflate as some
    servers send it (what httpx2 accepts too)."""

    def __init__(self, wbits: int, *, raw_fallback: bool = False) -> None:
        self._inflate = zlib.decompressobj(wbits)
        self._raw_fallback = raw_fallback

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            try:
                piece = self._inflate.decompress(data, PIECE)
            except zlib.error:
                if not self._raw_fallback:
                    raise
                self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
                piece = self._inflate.decompress(data, PIECE)
            self._raw_fallback = False
            yield piece
            while self._inflate.unconsumed_tail:
                yield self._inflate.decompress(self._inflate.unconsumed_tail, PIECE)
        except zlib.error as exc:
            raise _Invalid(str(exc)) from exc

    def finish(self) -> Iterator[bytes]:
        # All input was taken in: what zlib still holds is at most one match (258 bytes).
        try:
            yield self._inflate.flush()
        except zlib.error as exc:
            raise _Invalid(str(exc)) from exc


class _Brotli:
    """br (RFC 7932), with an output limit per call (brotli and brotlicffi 1.2)."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self._decompressor = module.Decompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            yield self._decompressor.process(data, output_buffer_limit=PIECE)
            while not self._decompressor.can_accept_more_data():
                yield self._decompressor.process(b"", output_buffer_limit=PIECE)
        except self._module.error as exc:
            raise _Invalid(str(exc)) from exc

    def finish(self) -> Iterator[bytes]:
        return iter(())


class _Zstd:
    """zstd (RFC 8878), frame after frame, through ``ZstdDecompressor(max_length=...)``."""

    def __init__(self, module: Any) -> None:
        self._module = module
        self._decompressor = module.ZstdDecompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            while True:
                yield self._decompressor.decompress(data, PIECE)
                data = b""
                if self._decompressor.eof:
                    data = self._decompressor.unused_data
                    if not data:
                        return
                    self._decompressor = self._module.ZstdDecompressor()  # the next frame
                elif self._decompressor.needs_input:
                    return
        except self._module.ZstdError as exc:
            raise _Invalid(str(exc)) from exc

    def finish(self) -> Iterator[bytes]:
        return iter(())


def _bounded_brotli() -> Any | None:
    """The installed brotli bindings, when they can limit their output."""
    for name in ("brotli", "brotlicffi"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module.Decompressor, "can_accept_more_data"):
            return module
    return None


def _zstd() -> Any | None:
    for name in ("compression.zstd", "backports.zstd"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


_BROTLI = _bounded_brotli()
_ZSTD = _zstd()
_STAGES: dict[str, Callable[[], _Stage]] = {
    "gzip": lambda: _Zlib(zlib.MAX_WBITS | 16),
    "deflate": lambda: _Zlib(zlib.MAX_WBITS, raw_fallback=True),
}
if _BROTLI is not None:
    _STAGES["br"] = lambda: _Brotli(_BROTLI)
if _ZSTD is not None:
    _STAGES["zstd"] = lambda: _Zstd(_ZSTD)
_KNOWN = frozenset({"gzip", "deflate", "br", "zstd"})
"""Encodings httpx2 would decode (without a bound) when their library is installed."""

ACCEPT_ENCODING = ", ".join(_STAGES)
"""The shared client's ``Accept-Encoding``: exactly the encodings decoded here."""


class BoundedDecoder:
    """Undoes a response's encodings, in the reverse of the order they were applied, and
    fails once the decoded body exceeds ``limit``."""

    def __init__(self, encodings: list[str], *, limit: int, request: httpx2.Request) -> None:
        self._stages = [_STAGES[encoding]() for encoding in reversed(encodings)]
        self._encodings = ", ".join(encodings)
        self._limit = limit
        self._request = request
        self._decoded = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded pieces of the next encoded chunk."""
        return self._checked(self._onward(0, self._stages[0].feed(data)))

    def finish(self) -> Iterator[bytes]:
        """What remains once the encoded body has ended."""
        return self._checked(
            piece
            for index, stage in enumerate(self._stages)
            for piece in self._onward(index, stage.finish())
        )

    def _onward(self, index: int, pieces: Iterator[bytes]) -> Iterator[bytes]:
        """``pieces`` out of stage ``index``, through the stages after it, counted."""
        last = index + 1 == len(self._stages)
        for piece in pieces:
            if not piece:
                continue
            if not last:
                yield from self._onward(index + 1, self._stages[index + 1].feed(piece))
                continue
            self._decoded += len(piece)
            if self._decoded > self._limit:
                msg = (
                    f"response body exceeds {self._limit} bytes once decoded "
                    f"(Content-Encoding: {self._encodings})"
                )
                raise DecodedResponseTooLarge(msg, request=self._request)
            yield piece

    def _checked(self, pieces: Iterator[bytes]) -> Iterator[bytes]:
        try:
            yield from pieces
        except _Invalid as exc:
            msg = f"the response body is not valid {self._encodings}: {exc}"
            raise UndecodableResponse(msg, request=self._request) from exc


def decoder_for(
    response: httpx2.Response, *, limit: int, request: httpx2.Request
) -> BoundedDecoder | None:
    """The decoder of ``response``'s body, its encoding headers removed; None when the body is
    not encoded (or only in encodings httpx2 leaves alone). Raises ``UndecodableResponse`` for an
    encoding the client did not accept."""
    values = response.headers.get_list("content-encoding", split_commas=True)
    if not values:
        return None
    encodings = [value.strip().lower() for value in values]
    encodings = [encoding for encoding in encodings if encoding not in ("", "identity")]
    if not any(encoding in _KNOWN for encoding in encodings):
        return None  # identity, or only encodings nobody decodes: the body as it came
    unsupported = [encoding for encoding in encodings if encoding not in _STAGES]
    if unsupported:
        msg = (
            f"the response is encoded with {', '.join(unsupported)}, which the client cannot "
            f"decode with a size limit and did not accept (Accept-Encoding: {ACCEPT_ENCODING})"
        )
        raise UndecodableResponse(msg, request=request)
    del response.headers["content-encoding"]
    response.headers.pop("content-length", None)
    return BoundedDecoder(encodings, limit=limit, request=request)
