"""Attestation challenges and App Attest assertions (``docs/ATTESTATION.md``)."""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelseal.server.api.deps import CurrentPrincipal, ServicesDep
from modelseal.server.api.errors import ERROR_RESPONSES
from modelseal.server.api.schemas import DEVICE_ID_REGEX, DeviceIn
from modelseal.server.services.attestation import AttestationIn

__all__ = [
    "AssertionIn",
    "AssertionOut",
    "AttestationBody",
    "ChallengeIn",
    "ChallengeOut",
    "DeviceEnrollIn",
    "router",
]

router = APIRouter(prefix="/v1/attestation", tags=["attestation"], responses=ERROR_RESPONSES)

# 64 KiB of evidence, base64-encoded.
_MAX_EVIDENCE_CHARS = 87_384


def _decode_base64(value: str) -> bytes:
    """Standard or URL-safe base64, padded or not."""
    text = value.strip().replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64") from None


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttestationBody(_In):
    """Attestation evidence sent with a device registration."""

    platform: str = Field(min_length=1, max_length=32, pattern=r"^[a-z0-9-]+$")
    evidence: str = Field(
        min_length=1, max_length=_MAX_EVIDENCE_CHARS, description="The evidence, base64"
    )
    challenge_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$")

    @field_validator("evidence")
    @classmethod
    def _check_evidence(cls, value: str) -> str:
        _decode_base64(value)
        return value

    def to_service(self) -> AttestationIn:
        """The service's view of this body."""
        return AttestationIn(self.platform, _decode_base64(self.evidence), self.challenge_id)


class DeviceEnrollIn(DeviceIn):
    """Register a device key, optionally with an attestation."""

    attestation: AttestationBody | None = None


class ChallengeIn(_In):
    """What the challenge will be used for."""

    purpose: Literal["enroll", "assertion"] = "enroll"


class ChallengeOut(BaseModel):
    """A single-use challenge."""

    challenge_id: str
    challenge: str = Field(description="32 random bytes, base64url without padding")
    expires_at: int
    platforms: list[str] = Field(description="Attestation platforms this server verifies")


class AssertionIn(_In):
    """A per-request App Attest assertion."""

    device_id: str = Field(pattern=DEVICE_ID_REGEX)
    challenge_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_]+$")
    assertion: str = Field(min_length=1, max_length=4096, description="CBOR assertion, base64")

    @field_validator("assertion")
    @classmethod
    def _check_assertion(cls, value: str) -> str:
        _decode_base64(value)
        return value


class AssertionOut(BaseModel):
    """The accepted assertion's counter."""

    device_id: str
    counter: int


@router.post("/challenge", status_code=status.HTTP_201_CREATED)
def new_challenge(
    principal: CurrentPrincipal, services: ServicesDep, body: ChallengeIn | None = None
) -> ChallengeOut:
    """A fresh single-use challenge bound to the caller."""
    view = services.attestation.issue_challenge(
        principal, body.purpose if body is not None else "enroll"
    )
    return ChallengeOut(
        challenge_id=view.challenge_id,
        challenge=view.challenge,
        expires_at=view.expires_at,
        platforms=list(services.attestation.platforms),
    )


@router.post("/assertion")
def verify_assertion(
    body: AssertionIn, principal: CurrentPrincipal, services: ServicesDep
) -> AssertionOut:
    """Verify an App Attest assertion by one of the caller's devices."""
    with services.sessions() as session:
        device = services.devices.require_active(session, principal, body.device_id)
        session.expunge(device)
    counter = services.attestation.verify_assertion(
        principal, device, body.challenge_id, _decode_base64(body.assertion)
    )
    return AssertionOut(device_id=body.device_id, counter=counter)
