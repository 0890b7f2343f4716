"""The reference network: a 64-64-10 ReLU perceptron, trained with Adam in plain numpy.

Training runs in float64 and the weights are kept as float32 (what the exported ONNX
model holds), so fine-tuning starts from exactly the weights that were issued.
Every random choice comes from a seeded generator: the same inputs give the same
weights, bit for bit, on the same platform. (Another CPU or BLAS may sum in another
order and round the last bit differently.)

The ONNX export is ``Gemm -> Relu -> Gemm`` with input ``input`` float32 ``[N, 64]``
and output ``logits`` float32 ``[N, 10]``; weights are ``[out, in]``, as in
``fc1.weight``/``fc1.bias``/``fc2.weight``/``fc2.bias``, and Gemm uses ``transB = 1``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from modelseal.models.digits import NUM_CLASSES, NUM_FEATURES

__all__ = [
    "HIDDEN_UNITS",
    "INPUT_NAME",
    "ONNX_OPSET",
    "OUTPUT_NAME",
    "MLPParams",
    "TrainingPlan",
    "init_params",
    "to_onnx",
    "train",
]

HIDDEN_UNITS = 64
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
ONNX_OPSET = 17
ONNX_IR_VERSION = 8  # the IR version that introduced opset 17 (onnx 1.12)

_ADAM_BETA1 = 0.9
_ADAM_BETA2 = 0.999
_ADAM_EPSILON = 1e-8

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class MLPParams:
    """The four weight tensors, float32 and read-only.

    Attributes:
        fc1_weight: ``[64, 64]`` (out, in).
        fc1_bias: ``[64]``.
        fc2_weight: ``[10, 64]``.
        fc2_bias: ``[10]``.
    """

    fc1_weight: F32
    fc1_bias: F32
    fc2_weight: F32
    fc2_bias: F32

    def __post_init__(self) -> None:
        shapes = {
            "fc1_weight": (HIDDEN_UNITS, NUM_FEATURES),
            "fc1_bias": (HIDDEN_UNITS,),
            "fc2_weight": (NUM_CLASSES, HIDDEN_UNITS),
            "fc2_bias": (NUM_CLASSES,),
        }
        for name, shape in shapes.items():
            array = np.array(getattr(self, name), dtype=np.float32, copy=True)
            if array.shape != shape:
                raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
            # A shared cached base model must not be editable through a reference to it.
            array.flags.writeable = False
            object.__setattr__(self, name, array)

    def tensors(self) -> dict[str, F32]:
        """The weights by their exported names (``fc1.weight``...)."""
        return {
            "fc1.weight": self.fc1_weight,
            "fc1.bias": self.fc1_bias,
            "fc2.weight": self.fc2_weight,
            "fc2.bias": self.fc2_bias,
        }

    def logits(self, x: npt.ArrayLike) -> F32:
        """The forward pass in float32, as the exported graph computes it."""
        inputs = np.asarray(x, dtype=np.float32)
        hidden = np.maximum(inputs @ self.fc1_weight.T + self.fc1_bias, np.float32(0))
        out: F32 = hidden @ self.fc2_weight.T + self.fc2_bias
        return out


@dataclass(frozen=True, slots=True)
class TrainingPlan:
    """How to run Adam.

    Attributes:
        epochs: Passes over the examples.
        batch_size: Examples per step.
        learning_rate: Adam's step size.
        l2: Strength of the pull towards ``anchor`` (or towards zero without one).
        seed: Seeds the order of examples in each epoch.
    """

    epochs: int
    batch_size: int
    learning_rate: float
    l2: float
    seed: int


def init_params(seed: int) -> MLPParams:
    """He-initialised weights and zero biases from ``seed``."""
    rng = np.random.default_rng(seed)
    scale = np.sqrt(2.0 / NUM_FEATURES)
    return MLPParams(
        fc1_weight=rng.normal(0.0, scale, (HIDDEN_UNITS, NUM_FEATURES)).astype(np.float32),
        fc1_bias=np.zeros(HIDDEN_UNITS, dtype=np.float32),
        fc2_weight=rng.normal(0.0, np.sqrt(2.0 / HIDDEN_UNITS), (NUM_CLASSES, HIDDEN_UNITS)).astype(
            np.float32
        ),
        fc2_bias=np.zeros(NUM_CLASSES, dtype=np.float32),
    )


def _gradients(
    params: list[F64], x: F64, y: npt.NDArray[np.int64], anchor: list[F64], l2: float
) -> list[F64]:
    w1, b1, w2, b2 = params
    hidden = np.maximum(x @ w1.T + b1, 0.0)
    logits = hidden @ w2.T + b2
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    # d(mean cross-entropy)/d(logits) = softmax - one_hot, over the batch.
    delta = probs
    delta[np.arange(len(y)), y] -= 1.0
    delta /= len(y)
    grad_hidden = delta @ w2
    grad_hidden[hidden <= 0.0] = 0.0
    grads = [grad_hidden.T @ x, grad_hidden.sum(axis=0), delta.T @ hidden, delta.sum(axis=0)]
    return [g + l2 * (p - a) for g, p, a in zip(grads, params, anchor, strict=True)]


def train(
    start: MLPParams,
    x: npt.ArrayLike,
    y: npt.ArrayLike,
    plan: TrainingPlan,
    *,
    anchor: MLPParams | None = None,
) -> MLPParams:
    """Minimise cross-entropy plus ``plan.l2 / 2 * ||params - anchor||^2`` with Adam.

    Args:
        start: The weights to start from.
        x: ``[n, 64]`` inputs in ``[0, 1]``.
        y: ``[n]`` labels ``0..9``.
        plan: Epochs, batch size, learning rate, L2 strength and seed.
        anchor: Weights the L2 term pulls towards; ``None`` pulls towards zero
            (plain weight decay). Fine-tuning anchors at the base model so that a
            handful of examples adapts the model without erasing what it knew.

    Returns:
        The trained weights.
    """
    inputs = np.asarray(x, dtype=np.float64)
    labels = np.asarray(y, dtype=np.int64)
    params = [t.astype(np.float64) for t in start.tensors().values()]
    centre = (
        [t.astype(np.float64) for t in anchor.tensors().values()]
        if anchor is not None
        else [np.zeros_like(p) for p in params]
    )
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    rng = np.random.default_rng(plan.seed)
    step = 0
    for _ in range(plan.epochs):
        order = rng.permutation(len(labels))
        for begin in range(0, len(labels), plan.batch_size):
            batch = order[begin : begin + plan.batch_size]
            grads = _gradients(params, inputs[batch], labels[batch], centre, plan.l2)
            step += 1
            correction1 = 1.0 - _ADAM_BETA1**step
            correction2 = 1.0 - _ADAM_BETA2**step
            for i, grad in enumerate(grads):
                first[i] = _ADAM_BETA1 * first[i] + (1.0 - _ADAM_BETA1) * grad
                second[i] = _ADAM_BETA2 * second[i] + (1.0 - _ADAM_BETA2) * grad * grad
                update = (first[i] / correction1) / (
                    np.sqrt(second[i] / correction2) + _ADAM_EPSILON
                )
                params[i] = params[i] - plan.learning_rate * update
    return MLPParams(*(p.astype(np.float32) for p in params))


def to_onnx(params: MLPParams, *, graph_name: str, metadata: Mapping[str, str]) -> bytes:
    """Export ``params`` as an ONNX model (opset 17, IR version 8).

    Args:
        params: The weights.
        graph_name: The graph's name.
        metadata: ``metadata_props`` of the model; keep user identifiers out of it.

    Returns:
        The serialised ``ModelProto``; equal inputs give equal bytes.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from modelseal import __version__

    nodes = [
        helper.make_node(
            "Gemm", [INPUT_NAME, "fc1.weight", "fc1.bias"], ["fc1.out"], name="fc1", transB=1
        ),
        helper.make_node("Relu", ["fc1.out"], ["relu1.out"], name="relu1"),
        helper.make_node(
            "Gemm", ["relu1.out", "fc2.weight", "fc2.bias"], [OUTPUT_NAME], name="fc2", transB=1
        ),
    ]
    graph = helper.make_graph(
        nodes,
        graph_name,
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", NUM_FEATURES])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", NUM_CLASSES])],
        [numpy_helper.from_array(array, name) for name, array in params.tensors().items()],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        ir_version=ONNX_IR_VERSION,
        producer_name="modelseal",
        producer_version=__version__,
    )
    helper.set_model_props(model, dict(metadata))
    onnx.checker.check_model(model)
    serialised: bytes = model.SerializeToString()
    return serialised
