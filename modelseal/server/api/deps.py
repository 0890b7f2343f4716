"""Dependencies of the routers, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from modelseal.server.container import Services
from modelseal.server.errors import AuthenticationError
from modelseal.server.services.accounts import Principal

__all__ = ["CurrentPrincipal", "ServicesDep", "get_principal", "get_services"]

_bearer = HTTPBearer(auto_error=False, description="An `ms_` API token or an OIDC ID token")


def get_services(request: Request) -> Services:
    """The services of the app handling ``request``."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_principal(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Authenticate the caller from ``Authorization: Bearer ...``.

    Raises:
        AuthenticationError: Missing or invalid credentials.
    """
    try:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise AuthenticationError("authentication required")
        return services.authenticator.authenticate(credentials.credentials)
    except AuthenticationError:
        services.metrics.access_errors_total.labels(reason=AuthenticationError.code).inc()
        raise


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
