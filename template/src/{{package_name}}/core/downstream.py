"""How a downstream call's failures become ``DownstreamError``s: one mapping for every client.

Template-owned. A team's client wraps each call in ``downstream_errors(name)`` and checks the
status with ``raise_for_downstream_status``, so no client keeps its own copy of which httpx
failure means which answer (and no copy falls behind when the platform adds one)::

    with downstream_errors(self.name):
        response = await self._http.get(url)
    raise_for_downstream_status(response, self.name, not_found=f"order {order_id}")

``CircuitOpenError`` is not mapped: it passes through, for a fallback to catch or for the
platform's handler to answer 503 with ``Retry-After``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager

import httpx2

from .errors import DownstreamError, DownstreamNotFound, DownstreamTimeout, DownstreamUnavailable


@contextmanager
def downstream_errors(name: str) -> Iterator[None]:
    """Turn an httpx failure of the calls inside the block into the ``DownstreamError`` that the
    service answers: an exhausted connection pool (``PoolTimeout``) is ``DownstreamUnavailable``
    (503: the call was never sent), any other timeout (the total deadline included) is
    ``DownstreamTimeout`` (504), any other transport failure (refused, reset, a response over
    ``http.max_response_bytes``) is ``DownstreamError`` (502). ``name`` names the downstream in
    the error and the logs."""
    try:
        yield
    except httpx2.PoolTimeout as exc:  # before TimeoutException: it is one
        raise DownstreamUnavailable(name, str(exc) or "no free connection") from exc
    except httpx2.TimeoutException as exc:
        raise DownstreamTimeout(name, "timed out") from exc
    except httpx2.TransportError as exc:
        raise DownstreamError(name, f"unreachable ({type(exc).__name__})") from exc


def raise_for_downstream_status(
    response: httpx2.Response,
    name: str,
    *,
    ok: Collection[int] = (200,),
    not_found: str | None = None,
) -> None:
    """Raise unless ``response``'s status is one of ``ok``: ``DownstreamNotFound`` (404) for a
    404 when ``not_found`` says what was not found, else ``DownstreamError`` (502)."""
    status = response.status_code
    if status in ok:
        return
    if status == httpx2.codes.NOT_FOUND and not_found is not None:
        raise DownstreamNotFound(name, f"{not_found} does not exist")
    raise DownstreamError(name, f"answered {status}")
