"""Model binding: the bound model works through the device's transform, and only through it."""

from __future__ import annotations

import hashlib
import hmac
import math
import pickle
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from modelseal.errors import UsageError
from modelseal.models import binding, digits
from modelseal.models import watermark as wm
from modelseal.models.bundle import ManifestFields, ModelFormat, build_bundle, parse_bundle
from modelseal.models.errors import BundleError

from .conftest import USER_A, run_onnx

DEVICE_SECRET = bytes(range(100, 132))
JTI = "jti-alice-0001"
NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")


@pytest.fixture(scope="module")
def transform() -> binding.BindingTransform:
    return binding.derive_transform(DEVICE_SECRET, JTI)


@pytest.fixture(scope="module")
def holdout() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    return digits.user_holdout(USER_A)


def _accuracy(model: bytes, x: npt.ArrayLike, y: npt.NDArray[np.int64]) -> float:
    return float(np.mean(run_onnx(model, x).argmax(axis=1) == y))


# --- derivation -----------------------------------------------------------------------------


def _documented_gaussians(secret: bytes, jti: str, dim: int) -> tuple[bytes, np.ndarray]:
    """The seed and the Gaussian matrix G as the module docstring specifies them, computed
    with the standard library (HKDF, HMAC) and AES block by block."""
    prk = hmac.new(bytes(32), secret, hashlib.sha256).digest()
    seed = hmac.new(prk, b"modelseal/1 binding" + jti.encode() + b"\x01", hashlib.sha256).digest()
    ecb = Cipher(algorithms.AES(seed), modes.ECB()).encryptor()
    count = dim * dim + (dim * dim) % 2
    stream = ecb.update(b"".join(i.to_bytes(16, "big") for i in range(count // 2)))
    values = [int.from_bytes(stream[8 * k : 8 * k + 8], "little") >> 11 for k in range(count)]
    g = []
    for m in range(0, count, 2):
        radius = math.sqrt(-2.0 * math.log((values[m] + 1) / 2.0**53))
        angle = 2.0 * math.pi * values[m + 1] / 2.0**53
        g += [radius * math.cos(angle), radius * math.sin(angle)]
    return seed, np.array(g[: dim * dim]).reshape(dim, dim)


def test_matrix_is_the_q_factor_of_the_documented_gaussian_matrix(
    transform: binding.BindingTransform,
) -> None:
    seed, g = _documented_gaussians(DEVICE_SECRET, JTI, 64)
    a = transform.matrix
    np.testing.assert_allclose(a.T @ a, np.eye(64), atol=1e-12)
    # G = A R with R upper triangular and a positive diagonal: that fixes A uniquely.
    r = a.T @ g
    assert np.max(np.abs(np.tril(r, -1))) < 1e-10
    assert np.all(np.diag(r) > 0)
    expected_check = hmac.new(seed, b"modelseal/1 binding check", hashlib.sha256).digest()[:16]
    assert transform.check == expected_check


@pytest.mark.parametrize("dim", [2, 3, 7, 64])
def test_every_size_gives_an_orthogonal_matrix_of_that_size(dim: int) -> None:
    transform = binding.derive_transform(DEVICE_SECRET, JTI, dim=dim)
    assert transform.matrix.shape == (dim, dim)
    np.testing.assert_allclose(transform.matrix.T @ transform.matrix, np.eye(dim), atol=1e-12)
    _, g = _documented_gaussians(DEVICE_SECRET, JTI, dim)
    r = transform.matrix.T @ g
    assert np.max(np.abs(np.tril(r, -1)), initial=0.0) < 1e-10
    assert np.all(np.diag(r) > 0)


def test_documented_example_manifest_is_reproduced() -> None:
    """The example in docs/WATERMARK.md §2.3: secret 0x20..0x3f, jti ``jti-user-000``."""
    example = binding.derive_transform(bytes(range(32, 64)), "jti-user-000")
    assert binding.binding_manifest(example) == {
        "type": "orthogonal-v1",
        "input": "input",
        "dim": 64,
        "jti": "jti-user-000",
        "check": "VvXPR50KEOoO72XajpphCg",
    }


def test_transform_differs_per_issuance_and_per_device(
    transform: binding.BindingTransform,
) -> None:
    other_jti = binding.derive_transform(DEVICE_SECRET, "jti-alice-0002")
    other_device = binding.derive_transform(bytes(32), JTI)
    again = binding.derive_transform(DEVICE_SECRET, JTI)
    np.testing.assert_array_equal(again.matrix, transform.matrix)
    for other in (other_jti, other_device):
        # Entries of independent random rotations: each about N(0, 1/64).
        assert np.max(np.abs(other.matrix - transform.matrix)) > 0.3
        assert other.check != transform.check


def test_matrix_mixes_every_input_into_every_output(transform: binding.BindingTransform) -> None:
    # No feature keeps most of its weight: a permutation or sign flip would leave 1.0 here.
    assert np.max(np.abs(transform.matrix)) < 0.6
    assert np.count_nonzero(np.abs(transform.matrix) > 1e-3) > 0.95 * 64 * 64


@pytest.mark.parametrize(
    ("secret", "jti", "kwargs", "field"),
    [
        (bytes(31), JTI, {}, "secret"),
        (DEVICE_SECRET, "", {}, "jti"),
        (DEVICE_SECRET, "j" * 256, {}, "jti"),
        (DEVICE_SECRET, JTI, {"dim": 1}, "dim"),
        (DEVICE_SECRET, JTI, {"dim": True}, "dim"),
        (DEVICE_SECRET, JTI, {"input_name": ""}, "input name"),
        (DEVICE_SECRET, JTI, {"input_name": "in\nput"}, "input name"),
    ],
)
def test_derivation_refuses_malformed_parameters(
    secret: bytes, jti: str, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(UsageError, match=field) as caught:
        binding.derive_transform(secret, jti, **kwargs)
    assert caught.value.code == "usage_error"


def test_transform_is_neither_printable_nor_picklable(transform: binding.BindingTransform) -> None:
    assert repr(transform) == f"BindingTransform(type='orthogonal-v1', dim=64, jti={JTI!r})"
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(transform)
    with pytest.raises(ValueError, match="read-only"):
        transform.matrix[0, 0] = 1.0


# --- the bound model ------------------------------------------------------------------------


def test_bound_model_through_the_transform_gives_the_unbound_outputs(
    iml_a: bytes,
    transform: binding.BindingTransform,
    holdout: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]],
) -> None:
    x, y = holdout
    bound = binding.bind_onnx(iml_a, transform)
    transformed = binding.apply_transform(x, transform)
    assert transformed.dtype == np.float32
    np.testing.assert_allclose(run_onnx(bound, transformed), run_onnx(iml_a, x), atol=1e-5)
    assert abs(_accuracy(bound, transformed, y) - _accuracy(iml_a, x, y)) <= 0.001


def test_bound_model_fed_plain_inputs_is_near_chance(
    iml_a: bytes, holdout: tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]
) -> None:
    x, y = holdout
    accuracies = []
    for i in range(8):
        bound = binding.bind_onnx(iml_a, binding.derive_transform(DEVICE_SECRET, f"jti-{i}"))
        accuracies.append(_accuracy(bound, x, y))
    # The IML scores about 89% here; ten classes put chance at 10%.
    assert float(np.mean(accuracies)) < 0.15, accuracies
    assert max(accuracies) < 0.25, accuracies


def test_binding_rewrites_only_the_first_layer(
    iml_a: bytes, transform: binding.BindingTransform
) -> None:
    bound = binding.bind_onnx(iml_a, transform)
    assert len(bound) == len(iml_a)
    assert bound != iml_a
    original = wm.read_weights(iml_a, ("fc1.weight",))
    assert wm.write_weights(bound, original) == iml_a


def test_unbinding_restores_the_weights(iml_a: bytes, transform: binding.BindingTransform) -> None:
    weights = wm.read_weights(iml_a, NAMES)
    bound = binding.bind_weights(weights, transform)
    for name in ("fc1.bias", "fc2.weight", "fc2.bias"):
        assert bound[name] is weights[name]
    restored = binding.unbind_weights(bound, transform)
    np.testing.assert_allclose(restored["fc1.weight"], weights["fc1.weight"], atol=1e-6)


def test_watermark_is_found_in_a_leaked_bound_model_once_unbound(
    iml_a: bytes, base_onnx: bytes, transform: binding.BindingTransform
) -> None:
    key = wm.WatermarkKey.derive(bytes(range(32)), JTI)
    decoys = [wm.WatermarkKey.derive(bytes(range(32)), f"decoy-{i}") for i in range(200)]
    issued = binding.bind_onnx(wm.embed_onnx(iml_a, key), transform)
    base = wm.read_weights(base_onnx, NAMES)
    leaked = wm.read_weights(issued, NAMES)
    assert wm.detect(leaked, base, [key, *decoys])[0].z < wm.DETECTION_Z
    matches = wm.detect(binding.unbind_weights(leaked, transform), base, [key, *decoys])
    assert matches[0].jti == JTI
    assert matches[0].significant


def test_apply_and_bind_refuse_the_wrong_width(
    iml_a: bytes, transform: binding.BindingTransform
) -> None:
    with pytest.raises(UsageError, match=r"\[\.\.\., 64\]") as caught:
        binding.apply_transform(np.zeros((3, 63), dtype=np.float32), transform)
    assert caught.value.code == "usage_error"
    weights = wm.read_weights(iml_a, NAMES)
    with pytest.raises(UsageError, match=r"\[out, 64\]") as caught:
        binding.bind_weights(weights, transform, layer="fc2.bias")
    assert caught.value.code == "usage_error"
    with pytest.raises(UsageError, match="no tensor") as caught:
        binding.bind_weights(weights, transform, layer="fc3.weight")
    assert caught.value.code == "usage_error"


# --- the manifest's binding object ----------------------------------------------------------


def test_manifest_object_carries_parameters_and_no_matrix(
    transform: binding.BindingTransform,
) -> None:
    obj = binding.binding_manifest(transform)
    assert set(obj) == {"type", "input", "dim", "jti", "check"}
    assert obj["type"] == "orthogonal-v1"
    assert obj["dim"] == 64
    assert obj["jti"] == JTI
    assert obj["input"] == "input"
    assert len(str(obj["check"])) == 22  # 16 bytes of base64url


def test_binding_round_trips_through_a_bundle(
    iml_a: bytes, transform: binding.BindingTransform
) -> None:
    fields = ManifestFields(
        model_id="digits",
        version="1",
        format=ModelFormat.ONNX,
        binding=binding.binding_manifest(transform),
    )
    bundle = parse_bundle(
        build_bundle(fields, [("model.onnx", binding.bind_onnx(iml_a, transform))])
    )
    assert bundle.manifest.fields.binding is not None
    rebuilt = binding.transform_from_manifest(bundle.manifest.fields.binding, DEVICE_SECRET)
    np.testing.assert_array_equal(rebuilt.matrix, transform.matrix)
    assert rebuilt.jti == JTI
    assert rebuilt.input_name == "input"


def test_another_devices_secret_is_rejected(transform: binding.BindingTransform) -> None:
    obj = binding.binding_manifest(transform)
    with pytest.raises(binding.BindingMismatchError, match="binding check failed") as caught:
        binding.transform_from_manifest(obj, bytes(range(200, 232)))
    assert caught.value.code == "binding_mismatch"


def _edited(transform: binding.BindingTransform, **changes: object) -> dict[str, object]:
    obj: dict[str, object] = dict(binding.binding_manifest(transform))
    for name, value in changes.items():
        if value is None:
            del obj[name]
        else:
            obj[name] = value
    return obj


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"check": None}, "lacks member 'check'"),
        ({"matrix": "AAAA"}, "unknown member 'matrix'"),
        ({"type": "affine-v1"}, "type must be"),
        ({"dim": True}, "dim"),
        ({"dim": 1}, "dim"),
        ({"dim": "64"}, "dim"),
        ({"jti": ""}, "jti"),
        ({"input": 5}, "input name"),
        ({"check": "AAAAAAAAAAAAAAAAAAAAAA=="}, "check"),
        ({"check": "AAAAAAAAAAAAAAAAAAAAAB"}, "check"),  # non-canonical final character
        ({"check": "AAAAAAAAAAAAAAAAAAAA"}, "check"),  # 15 bytes
        ({"check": "AAAAAAAAAAAAAAAAAAAAA+"}, "check"),  # not the url alphabet
        ({"check": 7}, "check"),
    ],
)
def test_malformed_binding_objects_are_rejected(
    transform: binding.BindingTransform, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(BundleError, match=message) as caught:
        binding.transform_from_manifest(_edited(transform, **changes), DEVICE_SECRET)
    assert caught.value.code == "bundle_invalid"
