"""Device registration, listing and revocation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from modelseal.server.api.attestation import DeviceEnrollIn
from modelseal.server.api.deps import CurrentPrincipal, ServicesDep
from modelseal.server.api.errors import ERROR_RESPONSES
from modelseal.server.api.schemas import DEVICE_ID_REGEX, DeviceList, DeviceOut

router = APIRouter(prefix="/v1/devices", tags=["devices"], responses=ERROR_RESPONSES)

DeviceIdPath = Annotated[str, Path(pattern=DEVICE_ID_REGEX)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": DeviceOut, "description": "the same registration again"},
        409: {"description": "key_already_registered | device_key_pinned"},
    },
)
def register_device(
    body: DeviceEnrollIn, principal: CurrentPrincipal, services: ServicesDep, response: Response
) -> DeviceOut:
    """Pin a device public key to the caller and this device id (optionally attested)."""
    info, created = services.devices.register(
        principal,
        body.device_id,
        body.app_version,
        body.public_key,
        body.attestation.to_service() if body.attestation is not None else None,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return DeviceOut.of(info)


@router.get("")
def list_devices(principal: CurrentPrincipal, services: ServicesDep) -> DeviceList:
    """The caller's devices."""
    return DeviceList(devices=[DeviceOut.of(d) for d in services.devices.list_for(principal)])


@router.delete("/{device_id}")
def revoke_device(
    device_id: DeviceIdPath, principal: CurrentPrincipal, services: ServicesDep
) -> DeviceOut:
    """Revoke one of the caller's devices; it can no longer request or download."""
    return DeviceOut.of(services.devices.revoke(principal, device_id))
