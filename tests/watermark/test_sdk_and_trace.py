"""The real thing: a server process issues, the device SDK fetches and runs, ``trace`` names.

The server runs as ``python -m modelseal.server`` (``tests/e2e/conftest.py``); the
device is a :class:`~modelseal.client.DeviceClient` that enrols, fetches, re-seals at
rest and loads the model into ONNX Runtime. The "dump" is the plaintext the device
decrypts: what an attacker who reads the app's memory holds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from typer.testing import CliRunner

from modelseal.cli.main import app
from modelseal.cli.trace_cmd import EXIT_NOT_FOUND
from modelseal.client import DeviceClient
from modelseal.models import binding as binding_lib
from modelseal.models import digits, reference
from modelseal.models import watermark as wm
from modelseal.models.bundle import parse_bundle
from modelseal.models.errors import BindingMismatchError
from tests.e2e.conftest import ServerProcess, enrolled, run_server
from tests.models.conftest import run_onnx

from .conftest import digits_models

OTHER_SECRET = "xmcm9nOf-RN7B6awjdMNJNizM0_NAQ1zNQmiKHZhQ3s"  # fixed test value


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with run_server(tmp_path_factory.mktemp("wm-live"), digits_models(), users=6) as running:
        yield running


def _dump(client: DeviceClient, model_id: str) -> bytes:
    with client.open_plaintext(model_id) as (_header, view):
        return bytes(view)


def _trace(
    live: ServerProcess, suspect: Path, *args: str, env: dict[str, str] | None = None
) -> Result:
    return CliRunner().invoke(
        app, ["trace", str(suspect), "--config", str(live.config), *args], env=env
    )


@pytest.fixture(scope="module")
def phone(live: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> DeviceClient:
    client = enrolled(live, tmp_path_factory.mktemp("phone"))
    client.fetch("bound")
    client.fetch("marked")
    client.fetch("plain")
    return client


def test_a_bound_model_runs_through_the_sdk_exactly_as_unbound(phone: DeviceClient) -> None:
    model = phone.load("bound")
    assert model.bound
    subject = model.header.claims.sub if model.header.claims is not None else ""
    x, y = digits.user_holdout(subject)
    dumped = parse_bundle(_dump(phone, "bound"))
    assert dumped.manifest.fields.binding is not None
    transform = binding_lib.transform_from_manifest(dumped.manifest.fields.binding)
    unbound = wm.write_weights(
        dumped.entry,
        binding_lib.unbind_weights(wm.read_weights(dumped.entry, ("fc1.weight",)), transform),
    )
    through_sdk = model.run(x)["logits"]
    reference_logits = run_onnx(unbound, x)
    assert float(np.max(np.abs(through_sdk - reference_logits))) < 1e-4
    sdk_accuracy = float(np.mean(through_sdk.argmax(axis=1) == y))
    unbound_accuracy = float(np.mean(reference_logits.argmax(axis=1) == y))
    assert abs(sdk_accuracy - unbound_accuracy) <= 0.001
    assert sdk_accuracy > 0.5  # a working model (60 personal examples here)
    # The same weights without the SDK's transform: near chance (10 classes).
    assert reference.accuracy(dumped.entry, x, y) < 0.3


def test_an_unbound_model_is_run_as_it_is(phone: DeviceClient) -> None:
    model = phone.load("marked")
    assert not model.bound
    subject = model.header.claims.sub if model.header.claims is not None else ""
    x, _ = digits.user_holdout(subject)
    entry = parse_bundle(_dump(phone, "marked")).entry
    np.testing.assert_allclose(model.run(x)["logits"], run_onnx(entry, x), atol=1e-6)


def test_a_binding_whose_seed_does_not_give_its_check_is_refused(phone: DeviceClient) -> None:
    binding = dict(parse_bundle(_dump(phone, "bound")).manifest.fields.binding or {})
    binding["seed"] = "A" * 42 + "E"  # 32 bytes, canonical, but another seed
    with pytest.raises(BindingMismatchError) as caught:
        binding_lib.transform_from_manifest(binding)
    assert caught.value.code == "binding_mismatch"


def test_trace_names_the_device_a_dumped_bound_model_came_from(
    live: ServerProcess, phone: DeviceClient, tmp_path: Path
) -> None:
    suspect = tmp_path / "leaked.onnx"
    suspect.write_bytes(parse_bundle(_dump(phone, "bound")).entry)
    result = _trace(live, suspect, "--model", "bound", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["ok"] is True
    assert document["found"] is True
    best = document["matches"][0]
    (claims,) = [m.claims for m in phone.models() if m.model_id == "bound"]
    assert claims is not None
    assert best["jti"] == claims.jti
    assert best["device_id"] == phone.enrollment.device_id
    assert best["user_subject"] == claims.sub
    assert best["issued_at"] == claims.iat
    assert best["family_p_value"] < 1e-6
    assert best["method"] in {"aligned", "unbound"}


def test_trace_of_a_marked_bundle_takes_the_model_from_the_manifest(
    live: ServerProcess, phone: DeviceClient, tmp_path: Path
) -> None:
    suspect = tmp_path / "leaked.bundle"
    suspect.write_bytes(_dump(phone, "marked"))
    result = _trace(live, suspect)
    assert result.exit_code == 0, result.output
    assert "found: issuance" in result.output
    assert phone.enrollment.device_id in result.output


def test_trace_with_the_wrong_secret_or_an_unmarked_model_finds_nothing(
    live: ServerProcess, phone: DeviceClient, tmp_path: Path
) -> None:
    marked = tmp_path / "marked.bundle"
    marked.write_bytes(_dump(phone, "marked"))
    wrong = _trace(live, marked, "--json", env={"MODELSEAL_WATERMARK_SECRET": OTHER_SECRET})
    assert wrong.exit_code == EXIT_NOT_FOUND, wrong.output
    assert json.loads(wrong.output)["found"] is False
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(parse_bundle(_dump(phone, "plain")).entry)
    unmarked = _trace(live, plain, "--model", "marked")
    assert unmarked.exit_code == EXIT_NOT_FOUND, unmarked.output
    assert "not found" in unmarked.output


def test_trace_refuses_what_it_cannot_judge(live: ServerProcess, tmp_path: Path) -> None:
    bare = tmp_path / "model.onnx"
    bare.write_bytes(reference.base_onnx())
    # Two models carry a watermark: a bare ONNX file does not say which one it is.
    result = _trace(live, bare, "--json")
    assert result.exit_code == 2, result.output
    assert json.loads(result.output)["error"]["code"] == "usage_error"
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a model at all")
    result = _trace(live, garbage, "--model", "marked", "--json")
    assert result.exit_code != 0
    assert json.loads(result.output)["error"]["code"] in {"model_invalid", "usage_error"}
    missing = _trace(live, tmp_path / "absent.onnx", "--model", "marked")
    assert missing.exit_code == 7


def test_trace_writes_nothing_and_refuses_a_server_without_its_data(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n[[models]]\nid = "digits"\n'
        'generator = "modelseal.models.reference:generate_iml"\nwatermark = true\n'
    )
    suspect = tmp_path / "model.onnx"
    suspect.write_bytes(reference.base_onnx())
    result = CliRunner().invoke(app, ["trace", str(suspect), "--config", str(config), "--json"])
    assert result.exit_code == 1, result.output
    assert json.loads(result.output)["error"]["code"] == "config_invalid"
    assert not (tmp_path / "data").exists()
