"""Unauthenticated endpoints: the issuer JWKS, metrics, health."""

from __future__ import annotations

import json

from fastapi import APIRouter, Response

from modelseal.server.api.deps import ServicesDep
from modelseal.server.metrics import CONTENT_TYPE

router = APIRouter(tags=["public"])

JWKS_PATH = "/.well-known/modelseal/issuer-jwks.json"


@router.get(JWKS_PATH, responses={200: {"content": {"application/jwk-set+json": {}}}})
def issuer_jwks(services: ServicesDep) -> Response:
    """The issuer keys that verify packages: the active key and keys still retiring."""
    body = json.dumps(services.keyring.jwks(), separators=(",", ":")).encode()
    return Response(
        body,
        media_type="application/jwk-set+json",
        headers={"Cache-Control": f"public, max-age={services.settings.jwks_max_age_seconds}"},
    )


@router.get("/metrics", include_in_schema=False)
def metrics(services: ServicesDep) -> Response:
    """Prometheus metrics (expose to the monitoring network only)."""
    return Response(services.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/healthz")
def health() -> dict[str, str]:
    """Liveness."""
    return {"status": "ok"}
