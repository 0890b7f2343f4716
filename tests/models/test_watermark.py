"""Forensic watermarks: the issuance is named after the usual model edits, and nothing else is."""

from __future__ import annotations

import hashlib
import hmac
import math
import pickle
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from onnxruntime.quantization import QuantType, quantize_dynamic

from modelseal.errors import UsageError
from modelseal.models import digits, reference
from modelseal.models import watermark as wm
from modelseal.models.mlp import MLPParams, TrainingPlan, train

from .conftest import USER_A, run_onnx

SECRET = bytes(range(32))
JTI_A = "jti-alice-0001"
JTI_B = "jti-bob-0001"
NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
DECOYS = 500

Weights = dict[str, npt.NDArray[np.generic]]


def _weights(model: bytes) -> Weights:
    return wm.read_weights(model, NAMES)


def _key(jti: str) -> wm.WatermarkKey:
    return wm.WatermarkKey.derive(SECRET, jti)


def _accuracy(model: bytes, user: str) -> float:
    x, y = digits.user_holdout(user)
    return float(np.mean(run_onnx(model, x).argmax(axis=1) == y))


@pytest.fixture(scope="module")
def base(base_onnx: bytes) -> Weights:
    return _weights(base_onnx)


@pytest.fixture(scope="module")
def marked_a(iml_a: bytes) -> bytes:
    return wm.embed_onnx(iml_a, _key(JTI_A))


@pytest.fixture(scope="module")
def marked_b(iml_b: bytes) -> bytes:
    return wm.embed_onnx(iml_b, _key(JTI_B))


@pytest.fixture(scope="module")
def candidates() -> list[wm.WatermarkKey]:
    decoys = [_key(f"decoy-{i}") for i in range(DECOYS)]
    return [_key(JTI_A), _key(JTI_B), *decoys]


def _assert_names(matches: list[wm.Match], jti: str) -> None:
    assert matches[0].jti == jti, matches[:3]
    assert matches[0].p_value < wm.DETECTION_P_VALUE, matches[0]
    assert matches[1].z < wm.DETECTION_Z, matches[:3]


# --- keys and patterns ----------------------------------------------------------------------


def _hkdf_sha256(ikm: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 with an empty salt, written out with the standard library only."""
    prk = hmac.new(bytes(32), ikm, hashlib.sha256).digest()
    out, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
    return out[:length]


def test_pattern_follows_the_documented_derivation() -> None:
    key_bytes = _hkdf_sha256(SECRET, b"modelseal/1 watermark" + JTI_A.encode(), 32)
    # CTR keystream block i is AES(key, u128be(i)): computed here block by block with ECB.
    ecb = Cipher(algorithms.AES(key_bytes), modes.ECB()).encryptor()
    blocks = b"".join(i.to_bytes(16, "big") for i in range(4096 // 16))
    stream = np.frombuffer(ecb.update(blocks), dtype=np.uint8).astype(np.int64)
    expected = np.where(stream < 128, np.where(stream % 2 == 1, 1, -1), 0)
    np.testing.assert_array_equal(_key(JTI_A).pattern(4096), expected)


def test_pattern_marks_about_half_the_positions_with_balanced_signs() -> None:
    pattern = _key(JTI_A).pattern(4096)
    assert set(np.unique(pattern)) == {-1, 0, 1}
    marked = int(np.count_nonzero(pattern))
    assert abs(marked - 2048) < 5 * 32  # binomial(4096, 1/2): sd 32
    assert abs(int(pattern.sum())) < 5 * math.sqrt(marked)


def test_patterns_differ_by_issuance_and_by_secret() -> None:
    a = _key(JTI_A).pattern(4096).astype(np.float64)
    other_jti = _key(JTI_B).pattern(4096).astype(np.float64)
    other_secret = wm.WatermarkKey.derive(bytes(32), JTI_A).pattern(4096).astype(np.float64)
    for other in (other_jti, other_secret):
        # Independent patterns: the overlap's correlation is about N(0, 1) / sqrt(1024).
        assert abs(a @ other) < 5 * math.sqrt(1024)


@pytest.mark.parametrize(
    ("secret", "jti"),
    [(bytes(31), JTI_A), (SECRET, ""), (SECRET, "x" * 256), (SECRET, 7)],
)
def test_key_derivation_refuses_short_secrets_and_malformed_jti(secret: bytes, jti: str) -> None:
    with pytest.raises(UsageError, match=r"secret|jti") as caught:
        wm.WatermarkKey.derive(secret, jti)
    assert caught.value.code == "usage_error"


def test_key_is_neither_printable_nor_picklable() -> None:
    key = _key(JTI_A)
    assert repr(key) == f"WatermarkKey(jti={JTI_A!r})"
    with pytest.raises(TypeError, match="pickled"):
        pickle.dumps(key)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tensors": ()}, "tensors"),
        ({"tensors": "fc1.weight"}, "tensors"),
        ({"tensors": ("a", "a")}, "tensors"),
        ({"strength": 0.0}, "strength"),
        ({"strength": 1.5}, "strength"),
        ({"density": 0}, "density"),
        ({"density": 129}, "density"),
        ({"density": True}, "density"),
    ],
)
def test_spec_refuses_out_of_range_parameters(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(UsageError, match=field) as caught:
        wm.WatermarkSpec(**kwargs)  # type: ignore[arg-type]
    assert caught.value.code == "usage_error"


def test_threshold_constant_is_the_normal_quantile_of_one_in_a_million() -> None:
    assert wm.p_value(wm.DETECTION_Z) == pytest.approx(1e-6, rel=1e-9)
    match = wm.Match("j", 5.5, wm.p_value(5.5), 1000 * wm.p_value(5.5))
    assert match.p_value < match.p_bound == pytest.approx(math.exp(-(5.5**2) / 2))
    # One of a thousand candidates: 5.5 is past 4.75 but not past the family-wise bar.
    assert not match.significant
    assert wm.Match("j", 6.5, 0.0, 1000 * wm.p_value(6.5)).significant


def test_family_p_value_counts_every_candidate_scored(
    marked_a: bytes, base: Weights, candidates: list[wm.WatermarkKey]
) -> None:
    matches = wm.detect(_weights(marked_a), base, candidates)
    for match in (matches[0], matches[1], matches[-1]):
        assert match.family_p_value == min(1.0, len(candidates) * match.p_value)
    assert matches[0].significant
    assert not matches[1].significant


# --- embedding ------------------------------------------------------------------------------


def test_embedding_adds_the_pattern_at_the_set_strength_and_nothing_else(iml_a: bytes) -> None:
    weights = _weights(iml_a)
    before = {k: v.copy() for k, v in weights.items()}
    marked = wm.embed(weights, _key(JTI_A))
    for name in NAMES:
        np.testing.assert_array_equal(weights[name], before[name])  # input untouched
        assert marked[name].dtype == np.float32
    for name in ("fc1.bias", "fc2.weight", "fc2.bias"):
        np.testing.assert_array_equal(marked[name], before[name])
    w = before["fc1.weight"].astype(np.float64)
    step = wm.DEFAULT_SPEC.strength * math.sqrt(float(np.mean(w * w)))
    change = (marked["fc1.weight"] - w) / step
    expected = _key(JTI_A).pattern(4096).reshape(64, 64)
    np.testing.assert_allclose(change, expected, atol=1e-4)


def test_embed_onnx_rewrites_only_the_marked_tensor(iml_a: bytes, marked_a: bytes) -> None:
    assert len(marked_a) == len(iml_a)
    assert marked_a != iml_a
    restored = wm.write_weights(marked_a, {"fc1.weight": _weights(iml_a)["fc1.weight"]})
    assert restored == iml_a


def test_marking_costs_under_a_fifth_of_a_point_of_accuracy() -> None:
    users = [f"user-{i:03d}" for i in range(6)]
    changes, logit_changes = [], []
    for i, user in enumerate(users):
        plain = reference.iml_onnx(user)
        marked = wm.embed_onnx(plain, _key(f"jti-fidelity-{i}"))
        changes.append(_accuracy(marked, user) - _accuracy(plain, user))
        x, _ = digits.user_holdout(user)
        logit_changes.append(float(np.max(np.abs(run_onnx(marked, x) - run_onnx(plain, x)))))
    # 6 x 450 held-out digits; one digit is 0.04 points of the mean.
    assert abs(100 * float(np.mean(changes))) <= 0.2, changes
    assert max(logit_changes) < 0.5, logit_changes


def test_embedding_refuses_missing_or_integer_tensors(iml_a: bytes) -> None:
    weights = _weights(iml_a)
    with pytest.raises(UsageError, match=r"no tensor named 'fc1.weight'") as caught:
        wm.embed({"fc2.weight": weights["fc2.weight"]}, _key(JTI_A))
    assert caught.value.code == "usage_error"
    with pytest.raises(UsageError, match="floating-point") as caught:
        wm.embed({"fc1.weight": weights["fc1.weight"].astype(np.int8)}, _key(JTI_A))
    assert caught.value.code == "usage_error"


# --- detection ------------------------------------------------------------------------------


def test_marked_reference_model_names_its_issuance(
    marked_a: bytes, base: Weights, candidates: list[wm.WatermarkKey]
) -> None:
    matches = wm.detect(_weights(marked_a), base, candidates)
    assert len(matches) == len(candidates)
    assert [m.z for m in matches] == sorted((m.z for m in matches), reverse=True)
    _assert_names(matches, JTI_A)
    assert matches[0].z > 7.0


def test_another_users_copy_is_not_attributed_to_this_issuance(
    marked_b: bytes, base: Weights, candidates: list[wm.WatermarkKey]
) -> None:
    matches = wm.detect(_weights(marked_b), base, candidates)
    _assert_names(matches, JTI_B)
    assert next(m for m in matches if m.jti == JTI_A).z < wm.DETECTION_Z


def test_unmarked_model_matches_no_candidate(
    iml_a: bytes, base: Weights, candidates: list[wm.WatermarkKey]
) -> None:
    matches = wm.detect(_weights(iml_a), base, candidates)
    assert matches[0].z < wm.DETECTION_Z, matches[0]


def test_unmarked_issued_copy_as_reference_gives_a_far_larger_score(
    iml_a: bytes, marked_a: bytes, base: Weights
) -> None:
    blind = wm.detect(_weights(marked_a), base, [_key(JTI_A)])[0]
    informed = wm.detect(_weights(marked_a), _weights(iml_a), [_key(JTI_A)])[0]
    assert informed.z > 3 * blind.z


def test_ten_thousand_wrong_keys_stay_below_the_threshold(marked_a: bytes, base: Weights) -> None:
    wrong = [_key(f"wrong-{i}") for i in range(10_000)]
    z = np.array([m.z for m in wm.detect(_weights(marked_a), base, wrong)])
    assert z.max() < wm.DETECTION_Z
    # The null distribution is the standard normal: checked to 5 standard errors.
    assert abs(z.mean()) < 5 / math.sqrt(z.size)
    assert abs(z.std() - 1.0) < 5 / math.sqrt(2 * z.size)


def test_erased_weights_score_zero_for_every_candidate(
    base: Weights, candidates: list[wm.WatermarkKey]
) -> None:
    zeroed = {name: np.zeros_like(array) for name, array in base.items()}
    matches = wm.detect(zeroed, base, candidates)
    assert {m.z for m in matches} == {0.0}
    assert {m.p_value for m in matches} == {0.5}


def test_detection_refuses_a_suspect_of_another_layout(
    marked_a: bytes, base: Weights, candidates: list[wm.WatermarkKey]
) -> None:
    suspect = _weights(marked_a)
    suspect["fc1.weight"] = suspect["fc1.weight"][:, :32]
    with pytest.raises(UsageError, match="shape") as caught:
        wm.detect(suspect, base, candidates)
    assert caught.value.code == "usage_error"
    suspect = _weights(marked_a)
    suspect["fc1.weight"][3, 4] = np.nan
    with pytest.raises(UsageError, match="NaN or infinite") as caught:
        wm.detect(suspect, base, candidates)
    assert caught.value.code == "usage_error"
    with pytest.raises(UsageError, match="chunk_size") as caught:
        wm.detect(_weights(marked_a), base, candidates, chunk_size=0)
    assert caught.value.code == "usage_error"


def test_chunking_does_not_change_the_scores(
    marked_a: bytes, base: Weights, candidates: list[wm.WatermarkKey]
) -> None:
    whole = wm.detect(_weights(marked_a), base, candidates)
    chunked = wm.detect(_weights(marked_a), base, iter(candidates), chunk_size=7)
    assert [m.jti for m in chunked] == [m.jti for m in whole]
    np.testing.assert_allclose([m.z for m in chunked], [m.z for m in whole], rtol=0, atol=1e-12)


# --- robustness -----------------------------------------------------------------------------


def _int8_dynamic(model: bytes, tmp_path: Path) -> tuple[bytes, Weights]:
    """onnxruntime's int8 quantizer; returns the model and its raw int8 fc1 as [out, in]."""
    src, dst = tmp_path / "model.onnx", tmp_path / "model.int8.onnx"
    src.write_bytes(model)
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
    quantized = dst.read_bytes()
    graph = onnx.load_model_from_string(quantized).graph
    initializers = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    fc1 = next(n for n in graph.node if n.op_type == "MatMulInteger").input[1]
    assert initializers[fc1].dtype == np.int8
    return quantized, {"fc1.weight": initializers[fc1].T.astype(np.float32)}


def test_mark_survives_float16_cast(
    marked_a: bytes, base: Weights, candidates: list[wm.WatermarkKey]
) -> None:
    suspect = {k: v.astype(np.float16) for k, v in _weights(marked_a).items()}
    _assert_names(wm.detect(suspect, base, candidates), JTI_A)


def test_mark_survives_onnxruntime_int8_quantization(
    marked_a: bytes, base: Weights, candidates: list[wm.WatermarkKey], tmp_path: Path
) -> None:
    quantized, suspect = _int8_dynamic(marked_a, tmp_path)
    # The quantized model is a working model, not a wreck that trivially lost the mark.
    assert _accuracy(quantized, USER_A) > _accuracy(marked_a, USER_A) - 0.01
    _assert_names(wm.detect(suspect, base, candidates), JTI_A)


def test_mark_survives_pruning_a_fifth_of_the_weights(
    marked_a: bytes, base: Weights, candidates: list[wm.WatermarkKey]
) -> None:
    suspect = _weights(marked_a)
    for name in ("fc1.weight", "fc2.weight"):
        w = suspect[name]
        suspect[name] = np.where(np.abs(w) < np.quantile(np.abs(w), 0.2), np.float32(0), w)
    _assert_names(wm.detect(suspect, base, candidates), JTI_A)


def test_mark_survives_noise_that_costs_a_point_of_accuracy(
    marked_a: bytes, base: Weights, candidates: list[wm.WatermarkKey]
) -> None:
    # 0.14 x RMS on every tensor costs 1.0 point on average over 20 users (the benchmark);
    # one draw's cost varies widely, so take several.
    clean = _accuracy(marked_a, USER_A)
    costs = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        suspect = {}
        for name, w in _weights(marked_a).items():
            rms = float(np.sqrt(np.mean(w.astype(np.float64) ** 2)))
            suspect[name] = (w + rng.normal(0.0, 0.14 * rms, w.shape)).astype(np.float32)
        costs.append(clean - _accuracy(wm.write_weights(marked_a, suspect), USER_A))
        _assert_names(wm.detect(suspect, base, candidates), JTI_A)
    assert float(np.mean(costs)) >= 0.005, costs


def test_mark_survives_fine_tuning_one_epoch_on_a_tenth_of_the_data(
    marked_a: bytes, base: Weights, candidates: list[wm.WatermarkKey]
) -> None:
    split = digits.load_split()
    chosen = np.random.default_rng(3).permutation(len(split.y_train))[: len(split.y_train) // 10]
    start = MLPParams(*(_weights(marked_a)[name] for name in NAMES))
    plan = TrainingPlan(epochs=1, batch_size=16, learning_rate=1e-3, l2=0.0, seed=4)
    tuned = train(start, split.x_train[chosen], split.y_train[chosen], plan)
    # Nine Adam steps move fc1 by about a quarter of the mark's amplitude (0.015) on average.
    moved = float(np.sqrt(np.mean((tuned.fc1_weight - start.fc1_weight) ** 2)))
    assert moved > 0.003
    _assert_names(wm.detect(dict(tuned.tensors()), base, candidates), JTI_A)


def test_permuted_hidden_units_hide_the_mark_until_aligned(
    marked_a: bytes, base: Weights, candidates: list[wm.WatermarkKey]
) -> None:
    w = _weights(marked_a)
    rng = np.random.default_rng(11)
    order, scale = rng.permutation(64), rng.uniform(0.5, 2.0, 64).astype(np.float32)
    shuffled = {
        "fc1.weight": w["fc1.weight"][order] * scale[:, None],
        "fc1.bias": w["fc1.bias"][order] * scale,
        "fc2.weight": w["fc2.weight"][:, order] / scale[None, :],
        "fc2.bias": w["fc2.bias"],
    }
    x, _ = digits.user_holdout(USER_A)
    np.testing.assert_allclose(
        MLPParams(*shuffled.values()).logits(x), MLPParams(*w.values()).logits(x), atol=1e-4
    )
    assert wm.detect(shuffled, base, candidates)[0].z < wm.DETECTION_Z
    aligned = wm.align_hidden_units(shuffled, base)
    np.testing.assert_allclose(
        MLPParams(*aligned.values()).logits(x), MLPParams(*w.values()).logits(x), atol=1e-4
    )
    _assert_names(wm.detect(aligned, base, candidates), JTI_A)


def test_average_of_two_copies_names_a_colluder(
    marked_a: bytes, marked_b: bytes, base: Weights, candidates: list[wm.WatermarkKey]
) -> None:
    a, b = _weights(marked_a), _weights(marked_b)
    averaged = {name: (a[name] + b[name]) / 2 for name in NAMES}
    matches = wm.detect(averaged, base, candidates)
    assert {m.jti for m in matches[:2]} == {JTI_A, JTI_B}
    assert matches[0].significant
    assert matches[2].z < wm.DETECTION_Z
