"""Fixtures for watermarks and binding at issuance: an in-process server issuing digit IMLs."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from modelseal.models.bundle import parse_bundle
from tests.server.conftest import Device, Harness, log_stream, start

__all__ = ["REFERENCE_GENERATOR", "digits_models", "issue_plaintext", "log_stream"]

REFERENCE_GENERATOR = "modelseal.models.reference:generate_iml"
BUNDLE = "application/vnd.modelseal.bundle"
EXAMPLES = 60  # fewer personalisation examples than the default: faster, still personal


def digits_models() -> list[dict[str, Any]]:
    """``marked``: watermark only; ``bound``: watermark and binding; ``plain``: neither."""
    common = {"generator": REFERENCE_GENERATOR, "ctype": BUNDLE, "options": {"examples": EXAMPLES}}
    return [
        {"id": "marked", **common, "watermark": True},
        {"id": "bound", **common, "watermark": True, "binding": True},
        {"id": "plain", **common},
    ]


@pytest.fixture
def digits_server(tmp_path: Path, log_stream: io.StringIO) -> Iterator[Harness]:
    """A dev server whose models are the reference digits IML, marked and bound or not."""
    yield from start(tmp_path, log_stream, models=digits_models())


def issue_plaintext(server: Harness, token: str, device: Device, model_id: str) -> bytes:
    """Issue ``model_id`` to ``device``, download and open it: the plaintext the device holds."""
    job = server.issue(token, device, model_id)
    response = server.client.get(job["download_url"], headers=server.auth(token, device.device_id))
    assert response.status_code == 200, response.text
    plaintext = server.open(response.content, device).plaintext
    parse_bundle(plaintext)  # a well-formed bundle
    return plaintext
