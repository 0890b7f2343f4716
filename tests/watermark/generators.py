"""Test generators: the reference digits IML as a safetensors bundle and as bare ONNX."""

from __future__ import annotations

from typing import Any

import numpy as np
from safetensors.numpy import save as save_safetensors

from modelseal.models import reference
from modelseal.models.bundle import ManifestFields, ModelFormat, build_bundle

EXAMPLES = 60


def safetensors_weights(user_id: str) -> bytes:
    """The user's reference IML weights as a safetensors file."""
    params = reference.personalise(user_id, n_examples=EXAMPLES)
    return save_safetensors({k: np.ascontiguousarray(v) for k, v in params.tensors().items()})


def safetensors_bundle(request: Any) -> bytearray:
    """A bundle whose entry is ``model.safetensors`` (format ``safetensors``)."""
    fields = ManifestFields(model_id=request.model_id, version="1", format=ModelFormat.SAFETENSORS)
    return build_bundle(fields, [("model.safetensors", safetensors_weights(request.user_id))])


def safetensors_file(request: Any) -> bytearray:
    """A bare safetensors file (ctype ``application/vnd.modelseal.safetensors``)."""
    return bytearray(safetensors_weights(request.user_id))


def onnx_file(request: Any) -> bytearray:
    """The bare ONNX model (ctype ``application/onnx``)."""
    return bytearray(reference.iml_onnx(request.user_id, n_examples=EXAMPLES))


def sealed_weights_bundle(request: Any) -> bytearray:
    """The ONNX IML as a sealed-weights bundle: the graph, then one file per weight tensor."""
    from modelseal.models.sealed_weights import build_sealed_weights_bundle

    fields = ManifestFields(model_id=request.model_id, version="1", format=ModelFormat.ONNX)
    return build_sealed_weights_bundle(
        fields, reference.iml_onnx(request.user_id, n_examples=EXAMPLES)
    )
