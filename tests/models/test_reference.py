"""The reference generator: real personalisation, deterministic, and pluggable into the server."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import onnx
import pytest

from modelseal.errors import UsageError
from modelseal.models import digits, reference
from modelseal.models.bundle import BUNDLE_MEDIA_TYPE, ModelFormat, parse_bundle
from modelseal.models.errors import ExamplesError
from modelseal.server.generators import GenerationRequest, load_generator

from .conftest import USER_A, USER_B, run_onnx

MIN_GAIN_POINTS = 5.0


def _accuracy(model: bytes, user_id: str) -> float:
    x, y = digits.user_holdout(user_id)
    return float(np.mean(run_onnx(model, x).argmax(axis=1) == y))


def test_base_model_classifies_plain_digits_well(base_onnx: bytes) -> None:
    split = digits.load_split()
    accuracy = float(np.mean(run_onnx(base_onnx, split.x_test).argmax(axis=1) == split.y_test))
    assert accuracy >= 0.95, f"base accuracy on plain held-out digits is {accuracy:.3f}"


@pytest.mark.parametrize(("user_id", "fixture"), [(USER_A, "iml_a"), (USER_B, "iml_b")])
def test_each_users_iml_beats_the_base_on_their_own_held_out_digits(
    user_id: str, fixture: str, base_onnx: bytes, request: pytest.FixtureRequest
) -> None:
    iml: bytes = request.getfixturevalue(fixture)
    base_accuracy = _accuracy(base_onnx, user_id)
    iml_accuracy = _accuracy(iml, user_id)
    gain = 100 * (iml_accuracy - base_accuracy)
    assert gain >= MIN_GAIN_POINTS, (
        f"{user_id}: base {100 * base_accuracy:.1f}%, IML {100 * iml_accuracy:.1f}%, "
        f"gain {gain:+.1f} points (needs {MIN_GAIN_POINTS})"
    )


def test_a_users_style_costs_the_base_model_accuracy(base_onnx: bytes) -> None:
    split = digits.load_split()
    plain = float(np.mean(run_onnx(base_onnx, split.x_test).argmax(axis=1) == split.y_test))
    styled = _accuracy(base_onnx, USER_A)
    assert plain - styled >= 0.10, f"plain {plain:.3f}, styled for {USER_A} {styled:.3f}"


def test_imls_of_two_users_differ(iml_a: bytes, iml_b: bytes, base_onnx: bytes) -> None:
    assert iml_a != iml_b
    assert iml_a != base_onnx
    x, _ = digits.user_holdout(USER_A)
    assert not np.array_equal(run_onnx(iml_a, x), run_onnx(iml_b, x))


def test_the_same_user_gets_identical_bytes_twice(iml_a: bytes) -> None:
    assert reference.iml_onnx(USER_A) == iml_a
    first = reference.build_iml_bundle(USER_A, "digits")
    second = reference.build_iml_bundle(USER_A, "digits")
    assert first == second


def test_a_fresh_process_generates_identical_bytes() -> None:
    # A new process trains its own base model: the whole pipeline must be deterministic.
    here = hashlib.sha256(reference.build_iml_bundle(USER_B, "digits")).hexdigest()
    code = (
        "import hashlib; from modelseal.models import reference; "
        f"print(hashlib.sha256(reference.build_iml_bundle({USER_B!r}, 'digits')).hexdigest())"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == here


def test_explicit_examples_give_the_same_iml_as_the_simulated_ones(iml_a: bytes) -> None:
    examples = digits.user_examples(USER_A, reference.DEFAULT_EXAMPLES)
    assert reference.iml_onnx(USER_A, examples) == iml_a


def test_different_explicit_examples_give_a_different_iml(iml_a: bytes) -> None:
    x, y = digits.user_examples(USER_A, reference.DEFAULT_EXAMPLES)
    assert reference.iml_onnx(USER_A, (x[:100], y[:100])) != iml_a


def test_iml_bundle_declares_what_it_holds_and_runs_in_onnxruntime(iml_a: bytes) -> None:
    bundle = parse_bundle(reference.build_iml_bundle(USER_A, "digits"))
    fields = bundle.manifest.fields
    assert fields.model_id == "digits"
    assert fields.version == reference.REFERENCE_VERSION
    assert fields.format is ModelFormat.ONNX
    assert [(s.name, s.dtype, s.shape) for s in fields.inputs] == [("input", "float32", ("N", 64))]
    assert [(s.name, s.dtype, s.shape) for s in fields.outputs] == [
        ("logits", "float32", ("N", 10))
    ]
    assert fields.binding is None
    assert bundle.manifest.entry.name == "model.onnx"
    assert bundle.entry == iml_a
    model = onnx.load_model_from_string(bundle.entry)
    onnx.checker.check_model(model, full_check=True)
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert [n.op_type for n in model.graph.node] == ["Gemm", "Relu", "Gemm"]
    assert [i.name for i in model.graph.initializer] == [
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    ]
    logits = run_onnx(bundle.entry, digits.user_holdout(USER_A)[0][:5])
    assert logits.shape == (5, 10)
    assert logits.dtype == np.float32


def test_iml_bundle_does_not_contain_the_user_id() -> None:
    bundle = reference.build_iml_bundle("user-4f1c9e", "digits")
    assert b"user-4f1c9e" not in bundle


def test_generator_loads_through_the_server_and_returns_the_bundle() -> None:
    generator = load_generator("modelseal.models.reference:generate_iml")
    request = GenerationRequest(
        user_id=USER_B, model_id="digits", device_id="device-1", jti="j-1", options={"examples": 90}
    )
    plaintext = generator(request)
    assert isinstance(plaintext, bytearray)  # wipeable by the server after sealing
    assert plaintext == reference.build_iml_bundle(USER_B, "digits", n_examples=90)
    assert BUNDLE_MEDIA_TYPE == "application/vnd.modelseal.bundle"


def test_generator_rejects_a_non_integer_examples_option() -> None:
    request = GenerationRequest(
        user_id=USER_B, model_id="digits", device_id="d", jti="j", options={"examples": "many"}
    )
    with pytest.raises(UsageError, match=r"options\.examples") as info:
        reference.generate_iml(request)
    assert info.value.code == "usage_error"


def _valid() -> tuple[np.ndarray, np.ndarray]:
    return digits.user_examples(USER_A, 20)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda x, y: (x[:, :63], y), "shape"),
        (lambda x, y: (x, y[:-1]), "y must have shape"),
        (lambda x, y: (np.where(x > 0.5, np.nan, x), y), "finite"),
        (lambda x, y: (x * 16, y), r"\[0, 1\]"),
        (lambda x, y: (x, np.where(y == 0, 10, y)), "labels"),
        (lambda x, y: (x, y.astype(np.float32)), "integers"),
        (lambda x, y: (x.astype(str), y), "numeric"),
        (lambda x, y: (x[:0], y[:0]), "shape"),
    ],
)
def test_malformed_examples_are_rejected(make: object, match: str) -> None:
    x, y = _valid()
    examples = make(x, y)  # type: ignore[operator]
    with pytest.raises(ExamplesError, match=match) as info:
        reference.personalise(USER_A, examples)
    assert info.value.code == "examples_invalid"


def test_examples_that_are_not_a_pair_are_rejected() -> None:
    with pytest.raises(ExamplesError, match="pair") as info:
        reference.personalise(USER_A, (np.zeros((3, 64)),))  # type: ignore[arg-type]
    assert info.value.code == "examples_invalid"


@pytest.mark.parametrize("n", [0, -1, 1348, True])
def test_an_impossible_number_of_simulated_examples_is_rejected(n: int) -> None:
    with pytest.raises(UsageError, match="n must be") as info:
        digits.user_examples(USER_A, n)
    assert info.value.code == "usage_error"


def test_styles_are_stable_per_user_and_differ_between_users() -> None:
    assert digits.user_style(USER_A) == digits.user_style(USER_A)
    assert digits.user_style(USER_A) != digits.user_style(USER_B)
    styled = digits.apply_style(digits.load_split().x_test, digits.user_style(USER_A))
    assert styled.dtype == np.float32
    assert styled.min() >= 0.0
    assert styled.max() <= 1.0


# SHA-256 of the 1797x64 float64 images then the 1797 int64 labels, little-endian, as
# sklearn.datasets.load_digits returns them (scikit-learn 1.9.1).
DIGITS_SHA256 = "f6d9e39f37dc45d327f6db33428ee58970ccceabb2535a5c179de35886b70443"


def test_digits_are_the_well_known_data_set() -> None:
    loaded = digits._digits_from_package_data()
    assert loaded is not None
    x, y = loaded
    assert x.shape == (1797, 64)
    assert np.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    digest = hashlib.sha256(x.astype("<f8").tobytes() + y.astype("<i8").tobytes()).hexdigest()
    assert digest == DIGITS_SHA256


@pytest.mark.slow  # importing sklearn.datasets loads SciPy: 4-10 s on a busy machine
def test_digits_read_without_sklearn_match_sklearns_loader() -> None:
    fast = digits._digits_from_package_data()
    assert fast is not None
    slow = digits._digits_from_sklearn()
    assert np.array_equal(fast[0], slow[0])
    assert np.array_equal(fast[1], slow[1])


def test_base_model_weights_cannot_be_edited_through_the_cache() -> None:
    base = reference.base_model()
    with pytest.raises(ValueError, match="read-only"):
        base.fc1_weight[0, 0] = 1.0


def test_report_prints_each_users_accuracy(capsys: pytest.CaptureFixture[str]) -> None:
    assert reference.main(["--report", "--users", "2", "--examples", "60"]) == 0
    out = capsys.readouterr().out
    assert "base model on plain held-out digits" in out
    assert "user-000" in out
    assert "user-001" in out
    assert "train base model" in out
    evaluation = reference.evaluate(["user-000"], n_examples=60)
    assert f"{100 * evaluation.users[0].iml_accuracy:.1f}%" in out
