"""The hand-written gateways the rendered service is compared with (scenarios C to G).

    python bench/gateways.py --scenario C --port 18010 --downstream http://127.0.0.1:18001

Each is the smallest FastAPI app that does what the rendered service's ``GET /users/{id}`` does
(call the users service, parse the user into a pydantic model, return it), with nothing else:
no logging, tracing, retries, breaker or metrics. They run under the same uvicorn settings as
the rendered service (uvloop, httptools, no access log). ``build`` makes one with its ``/readyz``;
bench/granian_apps.py serves the same app under granian.

- C: one shared ``httpx2.AsyncClient`` on httpx2's default transport (the seed's client).
- D: one shared ``aiohttp.ClientSession``.
- E: the seed's anti-pattern: a new ``httpx2.AsyncClient`` for every request.
- G: one shared ``httpx2.AsyncClient`` over the template's aiohttp pool adapter
  (``core/pool.py`` of the render, ``--package``): the httpx API on the pool A uses, with no
  outbound chain, logs, tracing or metrics. What offering the httpx API costs over D.
- F: no outbound call at all: the ceiling of FastAPI and uvicorn on this machine.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel


class User(BaseModel):
    id: int
    name: str
    email: str | None = None


def _check(status: int) -> None:
    if status != 200:
        raise HTTPException(502, f"downstream answered {status}")


def shared_httpx(downstream: str) -> FastAPI:
    import httpx2

    state: dict[str, httpx2.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["client"] = httpx2.AsyncClient(
            timeout=httpx2.Timeout(5.0, connect=1.0),
            limits=httpx2.Limits(max_connections=200, max_keepalive_connections=100),
        )
        yield
        await state["client"].aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/users/{user_id}")
    async def read_user(user_id: int) -> User:
        response = await state["client"].get(f"{downstream}/users/{user_id}")
        _check(response.status_code)
        return User.model_validate_json(response.content)

    return app


def shared_aiohttp(downstream: str) -> FastAPI:
    import aiohttp

    state: dict[str, aiohttp.ClientSession] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200),
            timeout=aiohttp.ClientTimeout(total=5.0, sock_connect=1.0),
        )
        yield
        await state["session"].close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/users/{user_id}")
    async def read_user(user_id: int) -> User:
        async with state["session"].get(f"{downstream}/users/{user_id}") as response:
            body = await response.read()
            _check(response.status)
        return User.model_validate_json(body)

    return app


def httpx_api_on_aiohttp(downstream: str, package: str) -> FastAPI:
    import importlib

    import httpx2

    pool = importlib.import_module(f"{package}.core.pool")
    settings = importlib.import_module(f"{package}.core.settings")
    state: dict[str, httpx2.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        http = settings.HttpClientSettings()
        state["client"] = httpx2.AsyncClient(
            timeout=httpx2.Timeout(http.timeout, connect=http.connect_timeout),
            transport=pool.AiohttpTransport(http),
        )
        yield
        await state["client"].aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/users/{user_id}")
    async def read_user(user_id: int) -> User:
        response = await state["client"].get(f"{downstream}/users/{user_id}")
        _check(response.status_code)
        return User.model_validate_json(response.content)

    return app


def client_per_request(downstream: str) -> FastAPI:
    import httpx2

    app = FastAPI()

    @app.get("/users/{user_id}")
    async def read_user(user_id: int) -> User:
        # The seed's anti-pattern, on purpose: a new client (and pool) for every call.
        async with httpx2.AsyncClient() as client:
            response = await client.get(f"{downstream}/users/{user_id}")
        _check(response.status_code)
        return User.model_validate_json(response.content)

    return app


def no_outbound(_: str) -> FastAPI:
    app = FastAPI()

    @app.get("/users/{user_id}")
    async def read_user(user_id: int) -> User:
        return User(id=user_id, name=f"user-{user_id}", email=f"user-{user_id}@example.com")

    return app


GATEWAYS = {"C": shared_httpx, "D": shared_aiohttp, "E": client_per_request, "F": no_outbound}
ON_THE_RENDER = {"G": httpx_api_on_aiohttp}  # built from the rendered package's modules


def build(scenario: str, downstream: str, package: str = "my_service") -> FastAPI:
    """The gateway's app, with the ``/readyz`` the benchmark waits for."""
    downstream = downstream.rstrip("/")
    if scenario in ON_THE_RENDER:
        app = ON_THE_RENDER[scenario](downstream, package)
    else:
        app = GATEWAYS[scenario](downstream)

    @app.get("/readyz")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=sorted([*GATEWAYS, *ON_THE_RENDER]), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--downstream", default="http://127.0.0.1:18001")
    parser.add_argument("--package", default="my_service", help="the render's package (G)")
    args = parser.parse_args()
    app = build(args.scenario, args.downstream, args.package)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
