"""Request and response bodies (pydantic models at the edge)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from modelseal.server.services.devices import DEVICE_ID_PATTERN, DeviceInfo
from modelseal.server.services.issuance import JobView

__all__ = [
    "DeviceAttestationOut",
    "DeviceIn",
    "DeviceList",
    "DeviceOut",
    "ErrorBody",
    "ErrorDetail",
    "IMLRequest",
    "JobOut",
]

DEVICE_ID_REGEX = f"^{DEVICE_ID_PATTERN.pattern}$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class ErrorDetail(BaseModel):
    """A machine-readable code and a human-readable message."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """Every error response has this shape."""

    error: ErrorDetail


class DeviceIn(_In):
    """Register a device key."""

    device_id: str = Field(pattern=DEVICE_ID_REGEX, description="Client-chosen device id")
    app_version: str = Field(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")
    public_key: dict[str, Any] = Field(
        description="Device public key as a JWK (X25519, P-256 or X-Wing recipient key)"
    )


class DeviceAttestationOut(BaseModel):
    """The device's latest verified attestation (``docs/ATTESTATION.md``)."""

    platform: str = Field(description="apple-appattest, android-key, play-integrity, ...")
    level: str = Field(description="The attested level, e.g. production, tee, device")
    verified_at: int
    signals: list[str] = Field(description="Fraud signals the verifier reported")


class DeviceOut(BaseModel):
    """A registered device."""

    device_id: str
    kid: str
    kem: str
    app_version: str
    status: str
    created_at: int
    revoked_at: int | None
    public_key: dict[str, Any]
    attestation: DeviceAttestationOut | None = Field(
        default=None, description="None: the device never sent a verified attestation"
    )

    @classmethod
    def of(cls, info: DeviceInfo) -> DeviceOut:
        """Shape a service result."""
        attested = info.attestation
        return cls(
            device_id=info.device_id,
            kid=info.kid,
            kem=info.kem,
            app_version=info.app_version,
            status=info.status,
            created_at=info.created_at,
            revoked_at=info.revoked_at,
            public_key=dict(info.public_key),
            attestation=None
            if attested is None
            else DeviceAttestationOut(
                platform=attested.platform,
                level=attested.level,
                verified_at=attested.verified_at,
                signals=list(attested.signals),
            ),
        )


class DeviceList(BaseModel):
    """The caller's devices."""

    devices: list[DeviceOut]


class IMLRequest(_In):
    """Ask for an IML of ``model_id`` for ``device_id``."""

    model_id: str = Field(min_length=1, max_length=64)
    device_id: str = Field(pattern=DEVICE_ID_REGEX)


class JobOut(BaseModel):
    """A job's status; a ready job carries a fresh, short-lived download link."""

    job_id: str
    status: str = Field(description="queued | running | ready | failed")
    model_id: str
    device_id: str
    created_at: int
    error_code: str | None = None
    jti: str | None = None
    download_url: str | None = Field(default=None, description="Relative URL; single use")
    link_expires_at: int | None = None

    @classmethod
    def of(cls, view: JobView) -> JobOut:
        """Shape a service result."""
        return cls(
            job_id=view.job_id,
            status=view.status,
            model_id=view.model_id,
            device_id=view.device_id,
            created_at=view.created_at,
            error_code=view.error_code,
            jti=view.jti,
            download_url=view.download_url,
            link_expires_at=view.link_expires_at,
        )
