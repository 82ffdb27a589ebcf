"""The shared outbound HTTP client: the only module that constructs HTTP clients.

Clients are made once per process. Each ``httpx2.AsyncClient`` owns a connection pool; one per
request means no connection reuse, a TCP (and TLS) handshake per call, and leaked sockets under
load. The FastAPI lifespan builds the client once, keeps it on ``app.state`` and closes it on
shutdown. Routes receive it with ``Depends(get_http_client)``, or the ``SharedHttpClient`` alias.
Ruff's banned-api rule (TID251) rejects ``httpx2.AsyncClient``/``httpx2.Client`` (and httpx's)
and ``aiohttp.ClientSession`` anywhere else.

Callers always get the httpx API, from httpx2 (the maintained line of httpx). Underneath,
``http.transport`` chooses the connection pool: ``aiohttp`` (the default: ``AiohttpTransport``
below, about 3x the throughput of the httpx pool, see the template's docs/performance.md) or
``httpx`` (httpx2's own pool, httpcore2, which respx mocks in the unit tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.cookiejar import Cookie, CookieJar
from typing import Annotated, Any

import aiohttp
import httpx2
import yarl
from fastapi import Depends, FastAPI, Request
from opentelemetry import trace

from .decoding import ACCEPT_ENCODING
from .settings import HttpClientSettings, PlatformSettings
from .telemetry import NULL_OBSERVER, Observer
from .transport import Downstreams, OutboundTransport

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

    The aiohttp session is opened on the first request, inside the running event loop.
    """

    def __init__(self, http: HttpClientSettings) -> None:
        self._settings = http
        # The same trust store as httpx2's own transport: the system's CA certificates (or
        # SSL_CERT_FILE / SSL_CERT_DIR), as httpcore2's default context reads them.
        self._ssl: ssl.SSLContext = httpx2.create_ssl_context()
        self._session: aiohttp.ClientSession | None = None
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

    def _open(self) -> aiohttp.ClientSession:
        http = self._settings
        self._session = aiohttp.ClientSession(
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


class _DiscardingJar(CookieJar):
    """A cookie jar that stores nothing, whoever sets a cookie on it."""

    def set_cookie(self, cookie: Cookie) -> None:
        return None

    def extract_cookies(self, response: object, request: object) -> None:
        return None


class _NoCookies(httpx2.Cookies):
    """The shared client's cookies: always empty."""

    def __init__(self) -> None:
        super().__init__(_DiscardingJar())

    def extract_cookies(self, response: httpx2.Response) -> None:
        return None


_NO_COOKIES = _NoCookies()  # one for the process: it never holds anything


class _SharedClient(httpx2.AsyncClient):
    """The process-wide client's class. (Private: code outside this module gets the shared
    client, and never constructs one.)

    **No cookies between calls.** One client serves every inbound request, so a cookie that a
    downstream set while serving one caller would go out on later calls for every other caller.
    Not keeping them also saves parsing ``Set-Cookie`` on every response (httpx builds urllib
    and email objects for it). A call that needs a cookie sends it in its ``Cookie`` header.

    **A direct ``send`` for the common call.** httpx's ``send`` runs an auth flow, a redirect
    loop, event hooks, cookie extraction and a stream wrapper around every call. When a call
    has none of these to do (no auth, redirects not followed, no hooks, the body read at once),
    ``send`` does what they would amount to: the client's timeout, the outbound transport, the
    response's request and encoding, the body read, ``elapsed``, and ``next_request`` on a
    redirect. Anything else takes httpx's own path. The outbound chain (retries, breaker,
    trace headers, log line, metrics) is the transport, so both paths go through all of it.
    (httpx's own INFO line per request, which ``log.py`` silences anyway, is not written.)
    It saves about 100 us of CPU per call (docs/performance.md).
    """

    def __init__(self, *, transport: OutboundTransport, **kwargs: Any) -> None:
        super().__init__(transport=transport, **kwargs)
        self._outbound = transport
        self._encoding = kwargs.get("default_encoding", "utf-8")

    @property
    def cookies(self) -> httpx2.Cookies:
        return _NO_COOKIES

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        msg = "the shared client keeps no cookies; send a Cookie header on the call instead"
        raise TypeError(msg)

    def _sends_as_is(
        self, request: httpx2.Request, stream: bool, auth: object, follow_redirects: object
    ) -> bool:
        """Whether httpx's ``send`` would only call the transport and read the body."""
        if stream or not isinstance(request.stream, httpx2.AsyncByteStream):
            return False
        if (self.auth if auth is httpx2.USE_CLIENT_DEFAULT else auth) is not None:
            return False
        if request.url.userinfo:  # httpx sends Basic auth from the URL's user and password
            return False
        if follow_redirects is httpx2.USE_CLIENT_DEFAULT:
            follow_redirects = self.follow_redirects
        if follow_redirects:
            return False
        hooks = self.event_hooks
        return not (hooks["request"] or hooks["response"])

    async def send(
        self,
        request: httpx2.Request,
        *,
        stream: bool = False,
        auth: httpx2.Auth | Any = httpx2.USE_CLIENT_DEFAULT,
        follow_redirects: bool | Any = httpx2.USE_CLIENT_DEFAULT,
    ) -> httpx2.Response:
        if not self._sends_as_is(request, stream, auth, follow_redirects):
            return await super().send(
                request, stream=stream, auth=auth, follow_redirects=follow_redirects
            )
        if self.is_closed:
            msg = "Cannot send a request, as the client has been closed."
            raise RuntimeError(msg)
        if "timeout" not in request.extensions:
            request.extensions = {**request.extensions, "timeout": self.timeout.as_dict()}
        started = time.perf_counter()
        try:
            response = await self._outbound.handle_async_request(request)
        except httpx2.RequestError as exc:
            exc.request = request  # as httpx's send does: every request error names its request
            raise
        response.request = request
        response.default_encoding = self._encoding
        try:
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
        response.elapsed = timedelta(seconds=time.perf_counter() - started)
        if response.has_redirect_location:
            # What httpx offers for a redirect it does not follow (a rare path: its own helper).
            response.next_request = self._build_redirect_request(request, response)
        return response


def build_http_client(
    settings: PlatformSettings,
    *,
    tracer: trace.Tracer | None = None,
    observer: Observer = NULL_OBSERVER,
    base_transport: httpx2.AsyncBaseTransport | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> httpx2.AsyncClient:
    """Build the process-wide client from settings.

    The defaults are the seed's client: ``Timeout(5.0, connect=1.0)``,
    ``Limits(max_connections=200, max_keepalive_connections=100)`` and the service name as
    ``User-Agent``. Every request goes through ``OutboundTransport``, which adds the circuit
    breaker, retries, trace headers, the outbound log line and metrics around ``base_transport``
    (the pool that ``http.transport`` names, unless a test passes another). ``clock`` drives
    deadlines and breaker timing; tests pass a fake one instead of sleeping.
    """
    http = settings.http
    limits = httpx2.Limits(
        max_connections=http.max_connections,
        max_keepalive_connections=http.max_keepalive_connections,
        keepalive_expiry=http.keepalive_expiry,
    )
    inner = base_transport
    if inner is None:
        inner = (
            AiohttpTransport(http)
            if http.transport == "aiohttp"
            else httpx2.AsyncHTTPTransport(limits=limits)
        )
    return _SharedClient(
        timeout=httpx2.Timeout(http.timeout, connect=http.connect_timeout),
        limits=limits,
        # Only the encodings that core/decoding.py decodes within max_response_bytes.
        headers={"User-Agent": http.user_agent, "Accept-Encoding": ACCEPT_ENCODING},
        transport=OutboundTransport(
            inner,
            downstreams=Downstreams(
                settings.retry_for, settings.breaker_for, observer=observer, clock=clock
            ),
            tracer=tracer or trace.get_tracer(__name__),
            observer=observer,
            max_response_bytes=http.max_response_bytes,
            clock=clock,
        ),
    )


def open_client(app: FastAPI) -> httpx2.AsyncClient | None:
    """The app's shared client while its lifespan runs, else None."""
    client: httpx2.AsyncClient | None = getattr(app.state, "http_client", None)
    return None if client is None or client.is_closed else client


async def get_http_client(request: Request) -> httpx2.AsyncClient:
    """FastAPI dependency: the shared client that the lifespan opened.

    A coroutine on purpose: FastAPI runs a plain ``def`` dependency in a worker thread, a
    thread hand-off on every request for what is an attribute lookup.
    """
    client = open_client(request.app)
    if client is None:
        msg = "The shared HTTP client is not open: is the app running inside its lifespan?"
        raise RuntimeError(msg)
    return client


def pool_usage(app: FastAPI) -> PoolUsage | None:
    """The connection pool of the app's shared client, either pool (aiohttp's connector or
    httpx's own); None while the client is not open, or when a test replaced the pool."""
    client = open_client(app)
    if client is None:
        return None
    inner = outbound_transport(client).inner
    if isinstance(inner, AiohttpTransport):
        return inner.usage()
    if isinstance(inner, httpx2.AsyncHTTPTransport):
        settings: PlatformSettings = app.state.settings
        # httpcore's pool: each connection is idle (kept alive, no request) or in use.
        connections = inner._pool.connections
        idle = sum(1 for connection in connections if connection.is_idle())
        return PoolUsage(len(connections) - idle, idle, settings.http.max_connections)
    return None


def outbound_transport(client: httpx2.AsyncClient) -> OutboundTransport:
    """The outbound chain of a client built here (for breaker state and tests)."""
    transport = client._transport
    if not isinstance(transport, OutboundTransport):
        msg = "this client was not built by build_http_client"
        raise TypeError(msg)
    return transport


SharedHttpClient = Annotated[httpx2.AsyncClient, Depends(get_http_client)]
"""Annotate a route parameter with this to receive the shared client."""
