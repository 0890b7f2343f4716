"""IML requests, job status and acknowledgement."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from modelseal.server.api.deps import CurrentPrincipal, ServicesDep
from modelseal.server.api.errors import ERROR_RESPONSES
from modelseal.server.api.schemas import ErrorBody, IMLRequest, JobOut

router = APIRouter(prefix="/v1", tags=["imls"], responses=ERROR_RESPONSES)

IdPath = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")]


@router.post(
    "/imls",
    status_code=status.HTTP_202_ACCEPTED,
    responses={429: {"model": ErrorBody, "description": "queue_full: retry after Retry-After"}},
)
def request_iml(body: IMLRequest, principal: CurrentPrincipal, services: ServicesDep) -> JobOut:
    """Queue the generation of an IML for one of the caller's devices."""
    return JobOut.of(services.issuance.request(principal, body.model_id, body.device_id))


@router.get("/jobs/{job_id}")
def get_job(job_id: IdPath, principal: CurrentPrincipal, services: ServicesDep) -> JobOut:
    """A job's status; when ready, with a fresh single-use download link."""
    return JobOut.of(services.issuance.get_job(principal, job_id))


@router.post("/issuances/{jti}/ack", status_code=status.HTTP_204_NO_CONTENT)
def ack_issuance(jti: IdPath, principal: CurrentPrincipal, services: ServicesDep) -> Response:
    """The device has stored the package: the server deletes its copy at once."""
    services.issuance.ack(principal, jti)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
