"""The operators' API: fraud verdicts, explanations and overrides (``/v1/admin/...``).

Admins authenticate with a bearer token of their own, distinct from every user
token: the server stores only its Argon2id hash (``abuse.admin_token_hash``; make
one with ``modelseal admin fraud admin-token``). Without that setting the admin API
answers 404 to everything. Failed attempts count against the address's
failed-authentication limit, like user tokens.
"""

from __future__ import annotations

from typing import Annotated, Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from modelseal.fraud import Verdict
from modelseal.server.api.deps import ServicesDep, client_address
from modelseal.server.api.errors import ERROR_RESPONSES
from modelseal.server.errors import AuthenticationError, NotFoundError

router = APIRouter(prefix="/v1/admin/fraud", tags=["admin"], responses=ERROR_RESPONSES)

_bearer = HTTPBearer(auto_error=False, description="The admin token (abuse.admin_token_hash)")
_hasher = PasswordHasher()
MAX_ADMIN_TOKEN_CHARS = 256
UserPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$")]


def require_admin(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """Check the admin bearer token; returns the actor name recorded for the action.

    Raises:
        NotFoundError: The admin API is not configured.
        RateLimitedError: Too many failed authentications from this address.
        AuthenticationError: Missing or wrong admin token.
    """
    configured = services.settings.abuse.admin_token_hash
    if configured is None:
        raise NotFoundError("not found")
    ip = client_address(request)
    services.abuse.auth_refused(ip)
    token = credentials.credentials if credentials is not None else ""
    try:
        if not token or len(token) > MAX_ADMIN_TOKEN_CHARS:
            raise VerificationError("missing")
        _hasher.verify(configured.get_secret_value(), token)
    except (VerificationError, InvalidHashError):
        services.metrics.access_errors_total.labels(reason="admin_unauthenticated").inc()
        services.abuse.auth_failed(ip)
        raise AuthenticationError("authentication failed") from None
    return f"admin-api@{ip}" if ip else "admin-api"


AdminActor = Annotated[str, Depends(require_admin)]


class OverrideIn(BaseModel):
    """An operator verdict."""

    model_config = ConfigDict(extra="forbid")

    verdict: Verdict
    reason: str = Field(min_length=1, max_length=1024)
    expires_at: int | None = Field(default=None, ge=0, le=2**40)


class ClearIn(BaseModel):
    """Why an override ends."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1024)


@router.get("/verdicts")
def list_verdicts(
    actor: AdminActor,
    services: ServicesDep,
    verdict: Annotated[Verdict | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Users whose verdict is not ok (or is ``verdict``), or with an override, worst first."""
    infos = services.abuse.list_verdicts(verdict, limit=limit)
    return {"verdicts": [info.to_json() for info in infos]}


@router.get("/users/{user}")
def explain(user: UserPath, actor: AdminActor, services: ServicesDep) -> dict[str, Any]:
    """One user's verdict, recomputed now, with the rules that fired and their events."""
    info = services.abuse.explain(user)
    overrides = services.abuse.overrides(user)
    return {
        **info.to_json(),
        "explanation": info.explain(),
        "overrides": [
            {
                "verdict": str(o.verdict),
                "reason": o.reason,
                "actor": o.actor,
                "created_at": o.created_at,
                "expires_at": o.expires_at,
                "cleared_at": o.cleared_at,
            }
            for o in overrides
        ],
    }


@router.post("/users/{user}/override")
def override(
    user: UserPath, body: OverrideIn, actor: AdminActor, services: ServicesDep
) -> dict[str, Any]:
    """Set the user's verdict; recorded (overrides table, event, audit log)."""
    info = services.abuse.override(
        user, body.verdict, reason=body.reason, actor=actor, expires_at=body.expires_at
    )
    return info.to_json()


@router.post("/users/{user}/override/clear")
def clear_override(
    user: UserPath, body: ClearIn, actor: AdminActor, services: ServicesDep
) -> dict[str, Any]:
    """End the user's active override; the computed verdict applies again."""
    return services.abuse.clear_override(user, reason=body.reason, actor=actor).to_json()
