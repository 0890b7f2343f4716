"""Marking at issuance works on every model container the adapters read, and fails cleanly."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors

from modelseal.models import reference
from modelseal.models import watermark as wm
from modelseal.models.bundle import parse_bundle
from modelseal.models.sealed_weights import external_tensors, is_sealed_weights
from modelseal.server.services.watermarking import load_server_secret
from tests.server.conftest import Harness, start

from .generators import safetensors_weights

GENERATORS = "tests.watermark.generators:"
BUNDLE = "application/vnd.modelseal.bundle"


def _models() -> list[dict[str, object]]:
    return [
        {
            "id": "st-bundle",
            "generator": GENERATORS + "safetensors_bundle",
            "ctype": BUNDLE,
            "watermark": True,
            "binding": True,
        },
        {
            "id": "st-file",
            "generator": GENERATORS + "safetensors_file",
            "ctype": "application/vnd.modelseal.safetensors",
            "watermark": {"enabled": True, "tensors": ["fc1.weight", "fc2.weight"]},
        },
        {
            "id": "onnx-file",
            "generator": GENERATORS + "onnx_file",
            "ctype": "application/onnx",
            "watermark": True,
        },
        {
            "id": "onnx-bound",
            "generator": GENERATORS + "onnx_file",
            "ctype": "application/onnx",
            "watermark": True,
            "binding": True,
        },
        {
            "id": "sealed-weights",
            "generator": GENERATORS + "sealed_weights_bundle",
            "ctype": BUNDLE,
            "watermark": True,
            "binding": True,
        },
        {
            "id": "no-such-tensor",
            "generator": GENERATORS + "onnx_file",
            "ctype": "application/onnx",
            "watermark": {"enabled": True, "tensors": ["conv9.weight"]},
        },
    ]


@pytest.fixture
def server(tmp_path: Path, log_stream: io.StringIO) -> Iterator[Harness]:
    yield from start(tmp_path, log_stream, models=_models())


def _issue(server: Harness, model_id: str) -> tuple[bytes, str, str]:
    token = server.user("dana")
    device = server.register(token, "dana-phone")
    job = server.issue(token, device, model_id)
    response = server.client.get(job["download_url"], headers=server.auth(token, "dana-phone"))
    assert response.status_code == 200
    return server.open(response.content, device).plaintext, job["jti"], device.device_id


def _subject(server: Harness) -> str:
    (info,) = server.services.issuance.recent()
    return info.user_subject


def test_a_safetensors_bundle_is_marked_bound_and_traced(server: Harness) -> None:
    plaintext, jti, device_id = _issue(server, "st-bundle")
    bundle = parse_bundle(plaintext)
    assert bundle.manifest.fields.binding is not None
    assert bundle.manifest.fields.binding["jti"] == jti
    report = server.services.watermarking.trace(plaintext, reference.base_onnx(), "st-bundle")
    assert report.found
    assert (report.matches[0].jti, report.matches[0].device_id) == (jti, device_id)
    assert report.matches[0].method in {"aligned", "unbound"}
    # Neither server secret nor the issuance's binding seed reaches the logs.
    logs = server.logs.getvalue()
    for name in ("watermark.key", "binding.key"):
        secret = (server.settings.data_dir / "secrets" / name).read_text().strip()
        assert secret not in logs
    assert str(bundle.manifest.fields.binding["seed"]) not in logs


def test_a_bare_safetensors_file_is_marked_in_every_policy_tensor(server: Harness) -> None:
    plaintext, jti, _ = _issue(server, "st-file")
    issued = load_safetensors(plaintext)
    plain = load_safetensors(safetensors_weights(_subject(server)))
    secret = load_server_secret(server.settings, "watermark_secret")
    spec = wm.WatermarkSpec(tensors=("fc1.weight", "fc2.weight"))
    expected = wm.embed(plain, wm.WatermarkKey.derive(secret, jti), spec)
    for name in ("fc1.weight", "fc2.weight", "fc1.bias", "fc2.bias"):
        np.testing.assert_array_equal(issued[name], expected[name])
    assert not np.array_equal(issued["fc2.weight"], plain["fc2.weight"])
    report = server.services.watermarking.trace(plaintext, reference.base_onnx(), "st-file")
    assert report.found
    assert report.matches[0].jti == jti


def test_a_sealed_weights_bundle_is_marked_and_bound_in_its_weight_files(server: Harness) -> None:
    plaintext, jti, device_id = _issue(server, "sealed-weights")
    bundle = parse_bundle(plaintext)
    assert is_sealed_weights(bundle.manifest)
    assert bundle.manifest.fields.binding is not None
    tensors = external_tensors(bundle.entry, bundle.manifest)
    assert "fc1.weight" in {t.name for t in tensors}
    report = server.services.watermarking.trace(plaintext, reference.base_onnx(), "sealed-weights")
    assert report.found
    assert (report.matches[0].jti, report.matches[0].device_id) == (jti, device_id)


def test_a_bare_onnx_model_is_marked_and_traced(server: Harness) -> None:
    plaintext, jti, _ = _issue(server, "onnx-file")
    report = server.services.watermarking.trace(plaintext, reference.base_onnx(), "onnx-file")
    assert report.found
    assert report.matches[0].jti == jti


@pytest.mark.parametrize("model_id", ["onnx-bound", "no-such-tensor"])
def test_a_policy_the_model_cannot_carry_fails_the_job_with_a_stable_code(
    server: Harness, model_id: str
) -> None:
    token = server.user("erin")
    device = server.register(token, "erin-phone")
    response = server.client.post(
        "/v1/imls",
        json={"model_id": model_id, "device_id": device.device_id},
        headers=server.auth(token),
    )
    assert response.status_code == 202
    job = server.wait_job(token, response.json()["job_id"])
    assert job["status"] == "failed"
    assert job["error_code"] == "config_invalid"
    assert "Traceback" not in server.logs.getvalue()
    assert server.services.issuance.recent() == []  # nothing issued, nothing recorded
