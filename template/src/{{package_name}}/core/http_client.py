"""The shared outbound HTTP client: the only module that constructs the service's HTTP client.

Clients are made once per process. Each ``httpx2.AsyncClient`` owns a connection pool; one per
request means no connection reuse, a TCP (and TLS) handshake per call, and leaked sockets under
load. The FastAPI lifespan builds the client once (``build_http_client``), keeps it on
``app.state`` and closes it on shutdown. Routes receive it with ``Depends(get_http_client)``, or
the ``SharedHttpClient`` alias. Ruff's banned-api rule (TID251) rejects
``httpx2.AsyncClient``/``httpx2.Client`` (and httpx's) and ``aiohttp.ClientSession`` anywhere
else but here and in ``core/pool.py``, the pool beneath this client.

Callers always get the httpx API, from httpx2 (the maintained line of httpx). A request goes
from the client to the outbound chain (``core/transport.py``), and from there to the pool that
``http.transport`` names (``core/pool.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from http.cookiejar import Cookie, CookieJar
from typing import Annotated, Any

import httpx2
from fastapi import Depends, FastAPI, Request
from opentelemetry import trace

from .decoding import ACCEPT_ENCODING
from .pool import PoolUsage, build_pool, pool_limits, read_usage
from .settings import PlatformSettings
from .telemetry import NULL_OBSERVER, Observer
from .transport import Downstreams, OutboundTransport


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
        await _read_body(response)
        response.elapsed = timedelta(seconds=time.perf_counter() - started)
        if response.has_redirect_location:
            # What httpx offers for a redirect it does not follow (a rare path: its own helper).
            response.next_request = self._build_redirect_request(request, response)
        return response


async def _read_body(response: httpx2.Response) -> None:
    """Read the whole body, as ``aread`` does, straight from the response's stream.

    The stream is the outbound chain's bounded body, already decoded and bounded in size and
    time: httpx2's ``aread`` would wrap it in three more async generators, a chunker and a
    decoder with nothing to do. What ``aread`` leaves is left here: the content, the stream
    marked consumed and the byte count (httpx2 keeps them in these attributes and has no
    setter), and the response closed, which returns the connection to the pool.
    """
    stream = response.stream
    assert isinstance(stream, httpx2.AsyncByteStream)  # noqa: S101 - the chain's bounded body
    try:
        content = b"".join([piece async for piece in stream])
    except httpx2.RequestError as exc:
        await response.aclose()
        exc.request = response.request  # as aread does: every request error names its request
        raise
    except BaseException:
        await response.aclose()
        raise
    response._content = content
    response.is_stream_consumed = True
    response._num_bytes_downloaded = len(content)
    await response.aclose()


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
    inner = build_pool(http) if base_transport is None else base_transport
    return _SharedClient(
        timeout=httpx2.Timeout(http.timeout, connect=http.connect_timeout),
        limits=pool_limits(http),
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
    settings: PlatformSettings = app.state.settings
    return read_usage(outbound_transport(client).inner, settings.http.max_connections)


def outbound_transport(client: httpx2.AsyncClient) -> OutboundTransport:
    """The outbound chain of a client built here (for breaker state and tests)."""
    transport = client._transport
    if not isinstance(transport, OutboundTransport):
        msg = "this client was not built by build_http_client"
        raise TypeError(msg)
    return transport


SharedHttpClient = Annotated[httpx2.AsyncClient, Depends(get_http_client)]
"""Annotate a route parameter with this to receive the shared client."""
