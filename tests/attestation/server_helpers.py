"""Helpers for attestation tests that drive an in-process server (``tests.server``)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modelseal.attestation.dev import InsecureDevAttester
from modelseal.keys import RecipientPrivateKey
from tests.attestation.apple_factory import APP_ID, AppleFactory
from tests.server.conftest import Harness, start


def start_attested(
    tmp_path: Path, logs: io.StringIO, apple: AppleFactory, **overrides: Any
) -> Iterator[Harness]:
    """A server with the insecure-dev verifier and App Attest pinned to ``apple``'s root."""
    root_file = tmp_path / "test-apple-root.pem"
    root_file.write_bytes(apple.root.pem)
    yield from start(
        tmp_path,
        logs,
        attestation={
            "insecure_dev": True,
            "challenge_ttl_seconds": 120,
            "apple": {"app_ids": [APP_ID], "roots": [str(root_file)]},
        },
        **overrides,
    )


def challenge(h: Harness, token: str, purpose: str = "enroll") -> dict[str, Any]:
    """``POST /v1/attestation/challenge`` for ``token``; must succeed."""
    response = h.client.post(
        "/v1/attestation/challenge", json={"purpose": purpose}, headers=h.auth(token)
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def raw(issued: dict[str, Any]) -> bytes:
    """The 32 challenge bytes of a challenge response."""
    text = issued["challenge"]
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def dev_attestation(issued: dict[str, Any], key: RecipientPrivateKey) -> dict[str, Any]:
    """The ``attestation`` member of an insecure-dev enrollment for ``key``."""
    evidence = InsecureDevAttester().attest(raw(issued), key.public_key())
    return {
        "platform": "insecure-dev",
        "evidence": base64.b64encode(evidence).decode(),
        "challenge_id": issued["challenge_id"],
    }
