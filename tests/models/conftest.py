"""Fixtures for the ML layer: the reference models, trained once per test process."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnxruntime
import pytest

from modelseal.models import reference

USER_A = "user-alice"
USER_B = "user-bob"


def run_onnx(model: bytes | str, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Run a digits model (bytes or a path) in onnxruntime and return its logits."""
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        model, sess_options=options, providers=["CPUExecutionProvider"]
    )
    (logits,) = session.run(["logits"], {"input": np.asarray(x, dtype=np.float32)})
    return np.asarray(logits)


@pytest.fixture(scope="session")
def base_onnx() -> bytes:
    """The base model as ONNX (trains the base once per process)."""
    return reference.base_onnx()


@pytest.fixture(scope="session")
def iml_a() -> bytes:
    """User A's IML as ONNX."""
    return reference.iml_onnx(USER_A)


@pytest.fixture(scope="session")
def iml_b() -> bytes:
    """User B's IML as ONNX."""
    return reference.iml_onnx(USER_B)
