"""Personalisation examples: a device uploads, lists and deletes its user's examples."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, ConfigDict, Field

from modelseal.server.api.deps import CurrentPrincipal, ServicesDep
from modelseal.server.api.errors import ERROR_RESPONSES
from modelseal.server.services.examples import ExamplesInfo

__all__ = ["ExamplesIn", "ExamplesList", "ExamplesOut", "router"]

router = APIRouter(prefix="/v1/examples", tags=["examples"], responses=ERROR_RESPONSES)

RecordIdPath = Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")]
# A hard ceiling on what the parser accepts; the configured limits are lower or equal.
_MAX_ROWS = 4096


class ExamplesIn(BaseModel):
    """One upload: ``x`` is ``n`` rows of 64 intensities in [0, 1], ``y`` their labels 0..9.

    Shapes, types and ranges are checked by the service, which names the first bad
    field (``examples_invalid``).
    """

    model_config = ConfigDict(extra="forbid")

    x: list[Any] = Field(max_length=_MAX_ROWS)
    y: list[Any] = Field(max_length=_MAX_ROWS)


class ExamplesOut(BaseModel):
    """One stored upload (never the examples themselves)."""

    record_id: str
    count: int
    created_at: int
    expires_at: int

    @classmethod
    def of(cls, info: ExamplesInfo) -> ExamplesOut:
        """The response form of ``info``."""
        return cls(
            record_id=info.record_id,
            count=info.count,
            created_at=info.created_at,
            expires_at=info.expires_at,
        )


class ExamplesUploaded(ExamplesOut):
    """A new upload and the caller's total of live examples after it."""

    total: int


class ExamplesList(BaseModel):
    """The caller's live uploads and their total."""

    records: list[ExamplesOut]
    total: int


class ExamplesDeleted(BaseModel):
    """How many uploads were deleted."""

    deleted: int


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        413: {"description": "body_too_large: split the upload"},
        422: {"description": "examples_invalid | examples_limit_exceeded | invalid_request"},
    },
)
def upload_examples(
    body: ExamplesIn, principal: CurrentPrincipal, services: ServicesDep
) -> ExamplesUploaded:
    """Store examples for personalising the caller's models (encrypted at rest)."""
    info, total = services.examples.upload(principal, body.x, body.y)
    return ExamplesUploaded(**ExamplesOut.of(info).model_dump(), total=total)


@router.get("")
def list_examples(principal: CurrentPrincipal, services: ServicesDep) -> ExamplesList:
    """The caller's stored uploads."""
    records = services.examples.list_for(principal)
    return ExamplesList(
        records=[ExamplesOut.of(r) for r in records], total=sum(r.count for r in records)
    )


@router.delete("/{record_id}")
def delete_examples(
    record_id: RecordIdPath, principal: CurrentPrincipal, services: ServicesDep
) -> ExamplesDeleted:
    """Delete one of the caller's uploads."""
    services.examples.delete(principal, record_id)
    return ExamplesDeleted(deleted=1)


@router.delete("")
def delete_all_examples(principal: CurrentPrincipal, services: ServicesDep) -> ExamplesDeleted:
    """Delete every upload of the caller."""
    return ExamplesDeleted(deleted=services.examples.delete_all(principal))
