"""Dependencies of the routers, as ``Annotated`` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from modelseal.server.container import Services
from modelseal.server.errors import AuthenticationError, RateLimitedError
from modelseal.server.services.accounts import Principal, TokenAuthenticator

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
    # An address past its failed-authentication limit is refused before any Argon2id
    # check, except for a token this process verified recently: an honest client behind
    # the same NAT as a credential stuffer keeps working.
    try:
        services.abuse.auth_refused(ip)
    except RateLimitedError:
        recent = (
            services.authenticator.authenticate_recent(credentials.credentials)
            if isinstance(services.authenticator, TokenAuthenticator)
            and credentials is not None
            and credentials.scheme.lower() == "bearer"
            else None
        )
        if recent is None:
            raise
        return recent
    try:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise AuthenticationError("authentication required")
        return services.authenticator.authenticate(credentials.credentials)
    except AuthenticationError as exc:
        services.metrics.access_errors_total.labels(reason=AuthenticationError.code).inc()
        services.abuse.auth_failed(ip, user_id=exc.user_id)
        raise


def _admitted(
    request: Request,
    services: Services,
    credentials: HTTPAuthorizationCredentials | None,
    *,
    allow_blocked: bool,
) -> Principal:
    """Authenticate the caller, then let the abuse policy admit (or refuse) the request."""
    principal = _authenticate(request, services, credentials)
    services.abuse.admit(
        principal,
        device_id=_device_of(request),
        ip=client_address(request),
        api_version=request.headers.get(API_VERSION_HEADER),
        allow_blocked=allow_blocked,
    )
    return principal


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
    return _admitted(request, services, credentials, allow_blocked=False)


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
    return _admitted(request, services, credentials, allow_blocked=True)


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
ReportingPrincipal = Annotated[Principal, Depends(get_reporting_principal)]
