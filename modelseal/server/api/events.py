"""App-reported security events: ``POST /v1/events``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, status
from pydantic import BaseModel

from modelseal.fraud.events import AppEventBatchIn
from modelseal.server.api.deps import ReportingPrincipal, ServicesDep, client_address
from modelseal.server.api.errors import ERROR_RESPONSES
from modelseal.server.errors import EventRejectedError

router = APIRouter(prefix="/v1", tags=["events"], responses=ERROR_RESPONSES)


class EventsAccepted(BaseModel):
    """How many events were stored."""

    accepted: int


@router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        404: {"description": "not_found: the caller has no such device"},
        422: {"description": "invalid_request | event_invalid: the message names the field"},
        429: {"description": "rate_limited: retry after Retry-After"},
    },
)
def report_events(
    body: AppEventBatchIn,
    request: Request,
    principal: ReportingPrincipal,
    services: ServicesDep,
    x_modelseal_device: Annotated[str | None, Header(max_length=128)] = None,
) -> EventsAccepted:
    """Store security events a device app observed (jailbreak, keystore trouble, ...).

    The batch is all or nothing and is filed under the caller; ``device_id`` must be
    one of the caller's devices (and equal ``X-Modelseal-Device`` when that is sent).
    Blocked accounts may still report.
    """
    if x_modelseal_device is not None and x_modelseal_device != body.device_id:
        raise EventRejectedError("body field device_id differs from X-Modelseal-Device")
    limit = services.settings.abuse.max_events_per_post
    if len(body.events) > limit:
        raise EventRejectedError(
            f"body field events: at most {limit} events, got {len(body.events)}"
        )
    accepted = services.abuse.report(
        principal, body.device_id, body.events, ip=client_address(request)
    )
    return EventsAccepted(accepted=accepted)
