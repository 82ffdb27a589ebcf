"""Liveness and readiness."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient


def test_healthz_and_readyz_while_running(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["http_client"] == "open"


def test_readyz_is_503_before_the_lifespan_ran(app: FastAPI) -> None:
    # Without the context manager TestClient does not run the lifespan: no client is open.
    response = TestClient(app).get("/readyz")
    assert response.status_code == 503
    assert response.json()["http_client"] == "closed"
