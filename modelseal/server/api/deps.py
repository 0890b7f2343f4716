"""Dependencies of the routers, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from modelseal.server.container import Services
from modelseal.server.errors import AuthenticationError
from modelseal.server.services.accounts import Principal

__all__ = [
    "API_VERSION_HEADER",
    "DEVICE_HEADER",
    "CurrentPrincipal",
    "ReportingPrincipal",
    "ServicesDep",
    "client_address",
    "get_principal",
    "get_reporting_principal",
    "get_services",
]

_bearer = HTTPBearer(auto_error=False, description="An `ms_` API token or an OIDC ID token")


def get_services(request: Request) -> Services:
    """The services of the app handling ``request``."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


API_VERSION_HEADER = "X-Modelseal-Api-Version"
DEVICE_HEADER = "X-Modelseal-Device"


def client_address(request: Request) -> str | None:
    """The client's address (the proxy's ``X-Forwarded-For`` when ``behind_proxy``)."""
    return request.client.host if request.client is not None else None


def _device_of(request: Request) -> str | None:
    value = request.headers.get(DEVICE_HEADER) or request.path_params.get("device_id")
    return value if isinstance(value, str) and 0 < len(value) <= 128 else None


def _authenticate(
    request: Request, services: Services, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    ip = client_address(request)
    # An address past its failed-authentication limit is refused before any check.
    services.abuse.auth_refused(ip)
    try:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise AuthenticationError("authentication required")
        return services.authenticator.authenticate(credentials.credentials)
    except AuthenticationError:
        services.metrics.access_errors_total.labels(reason=AuthenticationError.code).inc()
        services.abuse.auth_failed(ip)
        raise


def get_principal(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Authenticate the caller from ``Authorization: Bearer ...``, then apply the abuse
    policy: API version, blocked accounts, rate limits per user, device and address.

    Raises:
        AuthenticationError: Missing or invalid credentials.
        RateLimitedError: A rate limit refused the request.
        AccountBlockedError: The caller's fraud verdict is ``malicious``.
        ApiVersionError: ``X-Modelseal-Api-Version`` names a refused version.
    """
    principal = _authenticate(request, services, credentials)
    services.abuse.admit(
        principal,
        device_id=_device_of(request),
        ip=client_address(request),
        api_version=request.headers.get(API_VERSION_HEADER),
    )
    return principal


def get_reporting_principal(
    request: Request,
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Like :func:`get_principal`, but a blocked account passes: its events still count.

    Raises:
        AuthenticationError: Missing or invalid credentials.
        RateLimitedError: A rate limit refused the request.
        ApiVersionError: ``X-Modelseal-Api-Version`` names a refused version.
    """
    principal = _authenticate(request, services, credentials)
    services.abuse.admit(
        principal,
        device_id=_device_of(request),
        ip=client_address(request),
        api_version=request.headers.get(API_VERSION_HEADER),
        allow_blocked=True,
    )
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
ReportingPrincipal = Annotated[Principal, Depends(get_reporting_principal)]
