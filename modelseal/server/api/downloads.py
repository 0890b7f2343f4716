"""Package downloads through device-bound, single-use links."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path
from fastapi.responses import StreamingResponse

from modelseal.server.api.deps import CurrentPrincipal, ServicesDep
from modelseal.server.api.errors import ERROR_RESPONSES

router = APIRouter(prefix="/v1/downloads", tags=["downloads"], responses=ERROR_RESPONSES)

PACKAGE_MEDIA_TYPE = "application/vnd.modelseal.package"


@router.get(
    "/{token}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {PACKAGE_MEDIA_TYPE: {}}, "description": "the whole package"},
        206: {"content": {PACKAGE_MEDIA_TYPE: {}}, "description": "a single range"},
        403: {"description": "link_invalid | link_wrong_device | device_revoked"},
        410: {"description": "link_expired | link_used | object_gone"},
        416: {"description": "range_not_satisfiable"},
    },
)
def download(
    token: Annotated[str, Path(max_length=1024)],
    principal: CurrentPrincipal,
    services: ServicesDep,
    x_modelseal_device: Annotated[str | None, Header(max_length=128)] = None,
    range_: Annotated[str | None, Header(alias="Range", max_length=64)] = None,
) -> StreamingResponse:
    """Stream the sealed package (or one byte range of it).

    Requires the same user the link was minted for and ``X-Modelseal-Device`` equal
    to the link's device. Resume an interrupted download with ``Range: bytes=N-``.
    """
    download = services.downloads.open(principal, token, x_modelseal_device, range_)
    headers = {
        "Cache-Control": "no-store",
        "Accept-Ranges": "bytes",
        "Content-Length": str(download.last - download.first + 1 if download.total else 0),
        "X-Content-Type-Options": "nosniff",
    }
    status_code = 200
    if download.partial:
        status_code = 206
        headers["Content-Range"] = f"bytes {download.first}-{download.last}/{download.total}"
    return StreamingResponse(
        download.chunks, status_code=status_code, media_type=PACKAGE_MEDIA_TYPE, headers=headers
    )
