"""Errors of the ML layer: bundles, model files and training examples.

They sit beside the container's errors under :class:`~modelseal.errors.ModelSealError`,
each with a stable ``code``::

    ModelSealError
    ├── BundleError              bundle_invalid      the bytes are not a valid MSBUNDLE/1
    ├── ModelFormatError         model_invalid       an ONNX or safetensors file is malformed
    │   └── UnsupportedTensorError  tensor_unsupported  well-formed, but not readable here
    ├── ExamplesError            examples_invalid    personalisation examples are unusable
    └── VerificationError
        └── BindingMismatchError binding_mismatch    the binding secret is not the model's

A caller bug (an unknown tensor name, a replacement of the wrong dtype or shape)
raises :class:`~modelseal.errors.UsageError` instead.
"""

from __future__ import annotations

from modelseal.errors import ModelSealError, VerificationError

__all__ = [
    "BindingMismatchError",
    "BundleError",
    "ExamplesError",
    "ModelFormatError",
    "UnsupportedTensorError",
]


class BundleError(ModelSealError):
    """The bytes are not a well-formed ``MSBUNDLE/1`` bundle, or a file fails its hash."""

    code = "bundle_invalid"


class ModelFormatError(ModelSealError):
    """An ONNX or safetensors file is malformed or breaks a rule of its format."""

    code = "model_invalid"


class UnsupportedTensorError(ModelFormatError):
    """A tensor is well-formed but its element type or layout cannot be read as numpy here."""

    code = "tensor_unsupported"


class ExamplesError(ModelSealError):
    """Personalisation examples have the wrong shape, type or range."""

    code = "examples_invalid"


class BindingMismatchError(VerificationError):
    """The device's binding secret (or the bundle's seed) does not match the binding's check."""

    code = "binding_mismatch"
