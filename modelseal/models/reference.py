"""The reference IML generator: a real personalisation task that runs offline in seconds.

A base digit classifier (:mod:`modelseal.models.mlp`) is trained once per process on
scikit-learn's digits. A user's IML is that base fine-tuned on the user's own
examples, written in the user's handwriting (:mod:`modelseal.models.digits`),
exported to ONNX and wrapped in an ``MSBUNDLE/1`` bundle
(:mod:`modelseal.models.bundle`) whose media type is
``application/vnd.modelseal.bundle``.

Server wiring: a model spec with ``generator = "modelseal.models.reference:generate_iml"``
and ``ctype = "application/vnd.modelseal.bundle"``. The user's own examples, uploaded
by their device (``POST /v1/examples``), are used when the server holds any
(``request.user_data``); otherwise option ``examples`` (integer) sets how many
simulated examples each user contributes. Option ``sealed_weights = true`` lays the
IML out as a sealed-weights bundle (:mod:`modelseal.models.sealed_weights`).

``python -m modelseal.models.reference --report`` prints each user's accuracy with
the base model and with their IML.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

import numpy as np
import numpy.typing as npt

from modelseal.errors import UsageError
from modelseal.models.bundle import (
    BUNDLE_MEDIA_TYPE,
    ManifestFields,
    ModelFormat,
    TensorSpec,
    build_bundle,
)
from modelseal.models.digits import (
    NUM_CLASSES,
    NUM_FEATURES,
    check_user_id,
    load_split,
    user_examples,
    user_holdout,
)
from modelseal.models.errors import ExamplesError
from modelseal.models.mlp import (
    INPUT_NAME,
    ONNX_OPSET,
    OUTPUT_NAME,
    MLPParams,
    TrainingPlan,
    init_params,
    to_onnx,
    train,
)

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "DEFAULT_EXAMPLES",
    "MAX_EXAMPLES",
    "MODEL_FILE_NAME",
    "REFERENCE_VERSION",
    "Evaluation",
    "Examples",
    "IMLRequest",
    "UserResult",
    "accuracy",
    "base_model",
    "base_onnx",
    "build_iml_bundle",
    "evaluate",
    "generate_iml",
    "iml_onnx",
    "main",
    "personalise",
]

REFERENCE_VERSION = "digits-mlp-64x64x10-1"
"""The bundle ``version`` of every reference IML: names the base and the recipe."""

MODEL_FILE_NAME = "model.onnx"
DEFAULT_EXAMPLES = 150
MAX_EXAMPLES = 4096

_BASE_INIT_SEED = 1
_BASE_PLAN = TrainingPlan(epochs=60, batch_size=32, learning_rate=3e-3, l2=1e-4, seed=2)
_FINE_TUNE_EPOCHS = 40
_FINE_TUNE_BATCH = 16
_FINE_TUNE_RATE = 1e-3
_FINE_TUNE_L2 = 1e-3
_FINE_TUNE_LABEL = b"modelseal/1 reference fine-tune"

_INPUTS = (TensorSpec(INPUT_NAME, "float32", ("N", NUM_FEATURES)),)
_OUTPUTS = (TensorSpec(OUTPUT_NAME, "float32", ("N", NUM_CLASSES)),)
_RUNTIME_HINTS: Mapping[str, str | int | bool] = {
    "engine": "onnxruntime",
    "onnx_opset": ONNX_OPSET,
    "input": "8x8 digit, row-major, intensity/16 in [0,1]",
    "output": "logits of classes 0..9",
}
_MODEL_METADATA = {"modelseal.reference": REFERENCE_VERSION}

Examples: TypeAlias = tuple[npt.ArrayLike, npt.ArrayLike]
"""``(x, y)``: images ``[n, 64]`` in ``[0, 1]`` and labels ``[n]`` in ``0..9``."""

_base_lock = threading.Lock()
_base: MLPParams | None = None


def base_model() -> MLPParams:
    """The base classifier, trained on the plain digits once per process (about a second).

    Thread-safe: concurrent first callers wait for one training run.
    """
    global _base
    with _base_lock:
        if _base is None:
            split = load_split()
            _base = train(init_params(_BASE_INIT_SEED), split.x_train, split.y_train, _BASE_PLAN)
        return _base


def _checked_examples(examples: Examples) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    try:
        raw_x, raw_y = examples
    except (TypeError, ValueError):
        raise ExamplesError("examples must be a pair (x, y)") from None
    x, y = np.asarray(raw_x), np.asarray(raw_y)
    if x.ndim != 2 or x.shape[1] != NUM_FEATURES or not 1 <= x.shape[0] <= MAX_EXAMPLES:
        raise ExamplesError(f"x must have shape [1..{MAX_EXAMPLES}, {NUM_FEATURES}], got {x.shape}")
    if y.shape != (x.shape[0],):
        raise ExamplesError(f"y must have shape [{x.shape[0]}], got {y.shape}")
    if x.dtype.kind not in "fiu":
        raise ExamplesError(f"x must be numeric, got {x.dtype}")
    if y.dtype.kind not in "iu":
        raise ExamplesError(f"y must be integers, got {y.dtype}")
    x64 = x.astype(np.float64)
    if not np.all(np.isfinite(x64)) or x64.min() < 0.0 or x64.max() > 1.0:
        raise ExamplesError("x must hold finite intensities in [0, 1]")
    if y.min() < 0 or y.max() >= NUM_CLASSES:
        raise ExamplesError(f"y must hold labels 0..{NUM_CLASSES - 1}")
    return x64, y.astype(np.int64)


def personalise(
    user_id: str, examples: Examples | None = None, *, n_examples: int = DEFAULT_EXAMPLES
) -> MLPParams:
    """Fine-tune the base model on one user's examples.

    Args:
        user_id: The user; seeds the order of examples, so equal inputs give equal weights.
        examples: ``(x [n, 64] in [0, 1], y [n] in 0..9)``, such as examples the client
            uploaded; ``None`` uses :func:`~modelseal.models.digits.user_examples`.
        n_examples: How many simulated examples to use when ``examples`` is ``None``.

    Raises:
        ExamplesError: ``examples`` has the wrong shape, type or range.
        UsageError: ``user_id`` or ``n_examples`` is invalid.
    """
    check_user_id(user_id)
    if examples is None:
        examples = user_examples(user_id, n_examples)
    x, y = _checked_examples(examples)
    seed = int.from_bytes(
        hashlib.sha256(_FINE_TUNE_LABEL + b"\x00" + user_id.encode("utf-8")).digest()[:8], "big"
    )
    plan = TrainingPlan(
        epochs=_FINE_TUNE_EPOCHS,
        batch_size=_FINE_TUNE_BATCH,
        learning_rate=_FINE_TUNE_RATE,
        l2=_FINE_TUNE_L2,
        seed=seed,
    )
    base = base_model()
    return train(base, x, y, plan, anchor=base)


def iml_onnx(
    user_id: str, examples: Examples | None = None, *, n_examples: int = DEFAULT_EXAMPLES
) -> bytes:
    """The user's IML as ONNX bytes (see :func:`personalise` for the arguments)."""
    params = personalise(user_id, examples, n_examples=n_examples)
    return to_onnx(params, graph_name="digits_iml", metadata=_MODEL_METADATA)


def base_onnx() -> bytes:
    """The base model as ONNX bytes, for comparisons."""
    return to_onnx(base_model(), graph_name="digits_base", metadata=_MODEL_METADATA)


def build_iml_bundle(
    user_id: str,
    model_id: str,
    examples: Examples | None = None,
    *,
    n_examples: int = DEFAULT_EXAMPLES,
    sealed_weights: bool = False,
) -> bytearray:
    """The user's IML wrapped in a bundle, ready to seal.

    The manifest names ``model_id``, version :data:`REFERENCE_VERSION`, format
    ``onnx``, the ``input``/``logits`` signature and runtime hints; the bundle's
    one file is ``model.onnx``, or with ``sealed_weights`` the graph and one file
    per weight (:func:`~modelseal.models.sealed_weights.build_sealed_weights_bundle`).
    The user id appears nowhere in it (the container's ``sub`` claim carries it).

    Returns:
        A bytearray, so that the caller can wipe the plaintext after sealing.
    """
    onnx_bytes = iml_onnx(user_id, examples, n_examples=n_examples)
    fields = ManifestFields(
        model_id=model_id,
        version=REFERENCE_VERSION,
        format=ModelFormat.ONNX,
        inputs=_INPUTS,
        outputs=_OUTPUTS,
        runtime=_RUNTIME_HINTS,
    )
    if sealed_weights:
        from modelseal.models.sealed_weights import build_sealed_weights_bundle

        return build_sealed_weights_bundle(fields, onnx_bytes)
    return build_bundle(fields, [(MODEL_FILE_NAME, onnx_bytes)])


class IMLRequest(Protocol):
    """The parts of the server's ``GenerationRequest`` that this generator reads."""

    @property
    def user_id(self) -> str:
        """The user (``sub``)."""
        ...

    @property
    def model_id(self) -> str:
        """The model (``mid``)."""
        ...

    @property
    def options(self) -> Mapping[str, str | int | bool]:
        """The model's options from the server settings."""
        ...


class _UserData(Protocol):
    def examples(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]] | None: ...


def generate_iml(request: IMLRequest) -> bytearray:
    """The server generator: one user's IML bundle, in memory.

    Fine-tunes on the examples the user uploaded when the request's ``user_data``
    holds any; otherwise on option ``examples`` (integer, default 150) of the
    user's simulated examples. Option ``sealed_weights`` (boolean) picks the layout.

    Raises:
        UsageError: An option or the user id is invalid.
        ExamplesError: The uploaded examples are unusable.
    """
    n_examples = request.options.get("examples", DEFAULT_EXAMPLES)
    if isinstance(n_examples, bool) or not isinstance(n_examples, int):
        raise UsageError(f"options.examples must be an integer, got {n_examples!r}")
    sealed = request.options.get("sealed_weights", False)
    if not isinstance(sealed, bool):
        raise UsageError(f"options.sealed_weights must be a boolean, got {sealed!r}")
    user_data: _UserData | None = getattr(request, "user_data", None)
    uploaded = None if user_data is None else user_data.examples()
    return build_iml_bundle(
        request.user_id,
        request.model_id,
        uploaded,
        n_examples=n_examples,
        sealed_weights=sealed,
    )


def accuracy(model: bytes, x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """The fraction of ``x`` that the ONNX ``model`` classifies as ``y``, run in onnxruntime."""
    import onnxruntime  # type: ignore[import-untyped]

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        model, sess_options=options, providers=["CPUExecutionProvider"]
    )
    inputs = np.asarray(x, dtype=np.float32)
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: inputs})
    predicted = np.asarray(logits).argmax(axis=1)
    return float(np.mean(predicted == np.asarray(y)))


@dataclass(frozen=True, slots=True)
class UserResult:
    """One user's accuracy on their held-out styled digits.

    Attributes:
        user_id: The user.
        n_examples: Examples their IML was fine-tuned on.
        n_holdout: Held-out digits it was judged on.
        base_accuracy: The base model's accuracy on them.
        iml_accuracy: The IML's accuracy on them.
    """

    user_id: str
    n_examples: int
    n_holdout: int
    base_accuracy: float
    iml_accuracy: float

    @property
    def gain_points(self) -> float:
        """The IML's lead over the base, in percentage points."""
        return 100.0 * (self.iml_accuracy - self.base_accuracy)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """The base model on plain digits and each user's results.

    Attributes:
        base_test_accuracy: The base model on the plain held-out digits.
        users: One result per user, in the order asked for.
    """

    base_test_accuracy: float
    users: tuple[UserResult, ...]

    def table(self) -> str:
        """A plain-text table for the report."""
        lines = [
            f"base model on plain held-out digits: {100 * self.base_test_accuracy:.1f}%",
            f"{'user':<16} {'examples':>8} {'held-out':>8} {'base':>7} {'IML':>7} {'gain':>7}",
        ]
        for r in self.users:
            lines.append(
                f"{r.user_id:<16} {r.n_examples:>8} {r.n_holdout:>8} "
                f"{100 * r.base_accuracy:>6.1f}% {100 * r.iml_accuracy:>6.1f}% "
                f"{r.gain_points:>+6.1f}"
            )
        return "\n".join(lines)


def evaluate(user_ids: Sequence[str], *, n_examples: int = DEFAULT_EXAMPLES) -> Evaluation:
    """Judge the base model and each user's IML on that user's held-out styled digits.

    All accuracies come from the exported ONNX models run in onnxruntime, so they
    measure what a device would run.
    """
    split = load_split()
    base = base_onnx()
    results = []
    for user_id in user_ids:
        x, y = user_holdout(user_id)
        iml = iml_onnx(user_id, n_examples=n_examples)
        results.append(
            UserResult(user_id, n_examples, len(y), accuracy(base, x, y), accuracy(iml, x, y))
        )
    return Evaluation(accuracy(base, split.x_test, split.y_test), tuple(results))


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m modelseal.models.reference --report [--users N] [--examples N]``."""
    parser = argparse.ArgumentParser(prog="python -m modelseal.models.reference")
    parser.add_argument("--report", action="store_true", help="print the accuracy table")
    parser.add_argument("--users", type=int, default=8, help="simulated users (default 8)")
    parser.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES)
    args = parser.parse_args(argv)
    if not args.report:
        parser.print_help()
        return 2
    started = time.perf_counter()
    base_model()
    trained = time.perf_counter()
    user_ids = [f"user-{i:03d}" for i in range(args.users)]
    build_iml_bundle(user_ids[0], "digits", n_examples=args.examples)
    first = time.perf_counter() - trained
    warm = []
    for user_id in user_ids[:5]:
        begin = time.perf_counter()
        build_iml_bundle(user_id, "digits", n_examples=args.examples)
        warm.append(time.perf_counter() - begin)
    evaluation = evaluate(user_ids, n_examples=args.examples)
    mean_gain = float(np.mean([r.gain_points for r in evaluation.users]))
    print(evaluation.table())
    print(f"mean gain: {mean_gain:+.1f} points")
    print(f"train base model (load data, train): {trained - started:.2f} s")
    print(f"one IML bundle, first in process (imports onnx): {first:.3f} s")
    print(f"one IML bundle, median of next {len(warm)}: {float(np.median(warm)):.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
