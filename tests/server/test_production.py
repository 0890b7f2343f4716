"""Production mode serves the API and nothing meant for developers."""

from __future__ import annotations

import secrets
from pathlib import Path

from fastapi.testclient import TestClient

from modelseal.server.app import create_app
from modelseal.server.db.migrate import upgrade
from modelseal.server.db.session import make_engine

from .conftest import make_settings


def test_production_serves_no_api_schema_and_no_docs(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        mode="production",
        link_signing_key=secrets.token_urlsafe(32),
        behind_proxy=True,
        issuer_id="https://issuer.example",
    )
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    engine.dispose()
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
            assert client.get(path).status_code == 404, path
