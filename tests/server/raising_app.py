"""A bare app with the server's error handlers and one route that raises what a test gives."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from modelseal.server.api.errors import install_error_handlers


def app_raising(exc: Exception) -> TestClient:
    """A client of an app whose ``GET /boom`` raises ``exc``."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise exc

    return TestClient(app, raise_server_exceptions=False)
