"""The connection pool beneath the shared client: httpx2's transport interface over aiohttp.

``http.transport`` chooses the pool: ``aiohttp`` (the default, ``AiohttpTransport`` here) or
``httpx`` (httpx2's own pool, httpcore2, which respx mocks in the unit tests). This module owns
everything about the aiohttp session: opening it, the pool's limit and timeouts, the response
body, and aiohttp's errors as httpx2's. ``build_pool`` makes the pool that the settings name and
``read_usage`` reads either one at scrape time. ``core/http_client.py`` builds the shared
client over it; nothing here knows about the outbound chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass

import aiohttp
import httpx2
import yarl

from .settings import HttpClientSettings

# The process's one aiohttp session is opened here, the only place ruff's banned-api rule
# (TID251) lets code name the class.
_Session = aiohttp.ClientSession  # noqa: TID251

# aiohttp rounds timeouts of this many seconds or more up to a whole second; ours must be exact,
# since the outbound transport clips them to the call's deadline.
_NO_ROUNDING = 1e9


@contextlib.contextmanager
def _httpx_errors(request: httpx2.Request) -> Iterator[None]:
    """Raise aiohttp's errors as the httpx2 errors that the retry rules and the breaker know.

    The mapping keeps the distinction that matters for retries: ``ConnectError`` and
    ``ConnectTimeout`` mean nothing was sent (safe to resend any method); everything after the
    connection was made (a reset, a disconnect, a truncated body) may have reached the
    downstream, and is resent only for idempotent requests.
    """
    try:
        yield
    except aiohttp.ClientConnectorError as exc:  # refused, unreachable, DNS, TLS handshake
        raise httpx2.ConnectError(str(exc), request=request) from exc
    except aiohttp.ConnectionTimeoutError as exc:  # only the TCP connect is timed (sock_connect)
        raise httpx2.ConnectTimeout(str(exc), request=request) from exc
    except aiohttp.ServerTimeoutError as exc:  # sock_read: no byte within the read timeout
        raise httpx2.ReadTimeout(str(exc), request=request) from exc
    except (
        aiohttp.ServerDisconnectedError,  # closed before or while answering
        aiohttp.ClientPayloadError,  # body cut short, bad chunked encoding
        aiohttp.ClientResponseError,  # malformed status line or headers
    ) as exc:
        raise httpx2.RemoteProtocolError(str(exc) or type(exc).__name__, request=request) from exc
    except aiohttp.ClientOSError as exc:  # reset or broken pipe on an open connection
        raise httpx2.ReadError(str(exc), request=request) from exc
    except (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError) as exc:
        raise httpx2.UnsupportedProtocol(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:
        raise httpx2.TransportError(str(exc) or type(exc).__name__, request=request) from exc


class _AiohttpBody(httpx2.AsyncByteStream):
    """A response body read from aiohttp; closing it returns the connection and its pool slot."""

    __slots__ = ("_release_slot", "_request", "_response")

    def __init__(
        self,
        response: aiohttp.ClientResponse,
        request: httpx2.Request,
        release_slot: Callable[[], None],
    ) -> None:
        self._response = response
        self._request = request
        self._release_slot: Callable[[], None] | None = release_slot

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            with _httpx_errors(self._request):
                async for chunk in self._response.content.iter_any():
                    yield chunk
        except BaseException:
            self._response.close()  # failed or abandoned part-way: drop the connection
            raise

    async def aclose(self) -> None:
        # A fully read body returns the connection to the pool; a partly read one closes it.
        self._response.release()
        if self._release_slot is not None:
            self._release_slot()
            self._release_slot = None


@dataclass(frozen=True, slots=True)
class PoolUsage:
    """The shared client's connection pool at one moment (read at scrape time, never counted
    per request)."""

    in_use: int
    idle: int
    max_connections: int


@functools.cache
def system_trust() -> ssl.SSLContext:
    """The same trust store as httpx2's own transport: the system's CA certificates (or
    SSL_CERT_FILE / SSL_CERT_DIR), as httpcore2's default context reads them. Built once per
    process: reading the store takes milliseconds, and one context serves every pool."""
    return httpx2.create_ssl_context()


class AiohttpTransport(httpx2.AsyncBaseTransport):
    """httpx2's transport interface over an aiohttp connection pool.

    Behaves as httpx2's pooled transport where the outbound chain relies on it: at most
    ``max_connections`` requests in flight (a caller that waits longer than the pool timeout for
    one gets ``httpx2.PoolTimeout``), the connect and read timeouts of each request (which the
    outbound transport clips to the call's deadline), httpx's exception classes, and bodies
    left encoded for the outbound transport to decode (core/decoding.py). Differences:
    HTTP/1.1 only; no write timeout (aiohttp has none; request bodies here are small); idle
    connections are not capped separately (``max_keepalive_connections``), they close after
    ``keepalive_expiry``.

    The aiohttp session is opened on the first request, inside the running event loop, and
    closed by ``aclose``.
    """

    def __init__(self, http: HttpClientSettings) -> None:
        self._settings = http
        self._ssl = system_trust()
        self._session: _Session | None = None
        self._slots = asyncio.Semaphore(http.max_connections)
        self._timeout_key: tuple[float | None, float | None] = (None, None)
        self._timeout = aiohttp.ClientTimeout(ceil_threshold=_NO_ROUNDING)

    def usage(self) -> PoolUsage:
        """The pool now: connections in use (a request holds one of the ``max_connections``
        slots, from sending until its body is released: what runs out and ends in
        ``PoolTimeout``) and idle (kept alive in aiohttp's connector for reuse)."""
        limit = self._settings.max_connections
        in_use = limit - self._slots._value  # asyncio has no public count of a semaphore
        session = self._session
        connector = None if session is None or session.closed else session.connector
        if not isinstance(connector, aiohttp.TCPConnector):
            return PoolUsage(in_use, 0, limit)
        # aiohttp has no public counter of its idle connections: this is its keep-alive store.
        idle = sum(len(kept) for kept in connector._conns.values())
        return PoolUsage(in_use, idle, limit)

    def _open(self) -> _Session:
        http = self._settings
        self._session = _Session(
            connector=aiohttp.TCPConnector(
                limit=http.max_connections,
                limit_per_host=0,
                keepalive_timeout=http.keepalive_expiry,
                force_close=http.max_keepalive_connections == 0,
                ssl=self._ssl,
            ),
            cookie_jar=aiohttp.DummyCookieJar(),  # httpx keeps cookies, not the pool
            auto_decompress=False,  # the outbound transport decodes, within a size limit
            trust_env=False,
            raise_for_status=False,
        )
        return self._session

    def _timeouts(self, request: httpx2.Request) -> aiohttp.ClientTimeout:
        phases = request.extensions.get("timeout") or {}
        key = (phases.get("connect"), phases.get("read"))
        if key != self._timeout_key:  # usually the same as the last call: reuse it
            self._timeout_key = key
            self._timeout = aiohttp.ClientTimeout(
                sock_connect=key[0], sock_read=key[1], ceil_threshold=_NO_ROUNDING
            )
        return self._timeout

    async def _acquire_slot(self, request: httpx2.Request) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # free: returns at once
            return
        pool_timeout = (request.extensions.get("timeout") or {}).get("pool")
        try:
            async with asyncio.timeout(pool_timeout):
                await self._slots.acquire()
        except TimeoutError:
            msg = "no connection became free within the pool timeout"
            raise httpx2.PoolTimeout(msg, request=request) from None

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        session = self._session or self._open()
        await self._acquire_slot(request)
        try:
            body: bytes | httpx2.AsyncByteStream | None
            if isinstance(request.stream, httpx2.ByteStream):
                body = request.content or None
            else:
                body = request.stream  # type: ignore[assignment]  # streamed upload
                request.headers.pop("transfer-encoding", None)  # aiohttp chunks it itself
            with _httpx_errors(request):
                response = await session.request(
                    request.method,
                    yarl.URL(str(request.url), encoded=True),
                    headers=request.headers.multi_items(),
                    data=body,
                    allow_redirects=False,  # httpx follows redirects when asked to
                    timeout=self._timeouts(request),
                )
        except BaseException:
            self._slots.release()
            raise
        return httpx2.Response(
            status_code=response.status,
            headers=response.raw_headers,
            stream=_AiohttpBody(response, request, self._slots.release),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("ascii", "replace"),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def pool_limits(http: HttpClientSettings) -> httpx2.Limits:
    """The pool's limits, as httpx2 spells them."""
    return httpx2.Limits(
        max_connections=http.max_connections,
        max_keepalive_connections=http.max_keepalive_connections,
        keepalive_expiry=http.keepalive_expiry,
    )


def build_pool(http: HttpClientSettings) -> httpx2.AsyncBaseTransport:
    """The pool that ``http.transport`` names, not yet connected."""
    if http.transport == "aiohttp":
        return AiohttpTransport(http)
    return httpx2.AsyncHTTPTransport(limits=pool_limits(http))


def read_usage(pool: httpx2.AsyncBaseTransport, max_connections: int) -> PoolUsage | None:
    """The usage of either pool (aiohttp's connector or httpx2's own); None for a transport of
    another kind (a test's)."""
    if isinstance(pool, AiohttpTransport):
        return pool.usage()
    if isinstance(pool, httpx2.AsyncHTTPTransport):
        # httpcore's pool: each connection is idle (kept alive, no request) or in use.
        connections = pool._pool.connections
        idle = sum(1 for connection in connections if connection.is_idle())
        return PoolUsage(len(connections) - idle, idle, max_connections)
    return None
