"""Model binding: a per-device secret rotation of the inputs, folded into the first layer.

A bound model is issued with its first layer ``W`` replaced by ``W' = W A^T``, where ``A`` is
a random orthogonal matrix derived from a secret the device holds and the issuance id. The
device SDK applies ``x' = A x`` to every input before inference; then ``W' x' = W A^T A x =
W x`` and the model behaves exactly as before. Fed plain inputs, the bound model sees every
feature mixed into every other and falls to about chance.

The bundle's manifest carries the binding's parameters, never the matrix (``binding`` member,
``docs/WATERMARK.md`` §2)::

    {"type": "orthogonal-v1", "input": "input", "dim": 64, "jti": "<issuance id>",
     "check": "<base64url of 16 bytes>"}

The device rebuilds ``A`` from its binding secret and ``jti`` (:func:`transform_from_manifest`);
``check`` lets it tell a wrong secret from a right one before it runs the model.
A server that binds at issuance adds member ``"seed"`` (the issuance's 32-byte seed, base64url),
so the device needs no secret of its own; the seed then travels only inside the container
sealed to that device.

Derivation, specified so another platform gets the same matrix (to rounding)::

    seed  = HKDF-SHA256(ikm = device secret, salt = none, info = BINDING_INFO_LABEL || jti)[:32]
    check = HMAC-SHA256(seed, BINDING_CHECK_LABEL)[:16]
    n     = dim * dim, rounded up to even
    s     = AES-256-CTR keystream under seed, counter block 0, 8 * n bytes
    v_k   = u64le(s[8k : 8k + 8]) >> 11                       for k = 0 .. n - 1
    for each pair k = 2m, 2m + 1 (Box-Muller):
        r = sqrt(-2 ln((v_2m + 1) / 2^53)),  t = 2 pi v_2m+1 / 2^53
        g_2m = r cos t,  g_2m+1 = r sin t
    G     = the dim x dim matrix of g_0 .. g_(dim*dim - 1), row-major
    A     = Q of G = Q R with every diagonal entry of R positive (this Q is unique)

``A`` is then uniformly distributed over the orthogonal group: no input feature keeps a
privileged direction.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
from collections.abc import Mapping
from typing import NoReturn

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelseal.errors import UsageError
from modelseal.models.errors import BindingMismatchError, BundleError

__all__ = [
    "BINDING_CHECK_LABEL",
    "BINDING_INFO_LABEL",
    "BINDING_TYPE",
    "BindingMismatchError",
    "BindingTransform",
    "apply_transform",
    "bind_onnx",
    "bind_weights",
    "binding_manifest",
    "derive_seed",
    "derive_transform",
    "transform_from_manifest",
    "transform_from_seed",
    "unbind_weights",
]

BINDING_TYPE = "orthogonal-v1"
BINDING_INFO_LABEL = b"modelseal/1 binding"
BINDING_CHECK_LABEL = b"modelseal/1 binding check"

SEED_BYTES = 32
CHECK_BYTES = 16
MIN_SECRET_BYTES = 32
MAX_JTI_CHARS = 255
MIN_DIM = 2
MAX_DIM = 4096
MAX_INPUT_NAME_CHARS = 128

_MANIFEST_MEMBERS = frozenset({"type", "input", "dim", "jti", "check"})
# A bundle the server binds at issuance also carries the issuance's seed (it travels
# only inside the container sealed to the device): docs/WATERMARK.md section 2.3.
_OPTIONAL_MEMBERS = frozenset({"seed"})
_B64U = re.compile(r"[A-Za-z0-9_-]*")

F64 = npt.NDArray[np.float64]


class BindingTransform:
    """One issuance's input transform ``x' = A x``. Secret: not printable, not picklable.

    Build one with :func:`derive_transform` or :func:`transform_from_manifest`.
    """

    __slots__ = ("_check", "_input", "_jti", "_matrix")

    def __init__(self, matrix: F64, *, jti: str, input_name: str, check: bytes) -> None:
        matrix = np.array(matrix, dtype=np.float64, copy=True)
        matrix.flags.writeable = False
        self._matrix = matrix
        self._jti = jti
        self._input = input_name
        self._check = check

    @property
    def matrix(self) -> F64:
        """``A``, ``[dim, dim]``, read-only."""
        return self._matrix

    @property
    def dim(self) -> int:
        """Features per example."""
        return int(self._matrix.shape[0])

    @property
    def jti(self) -> str:
        """The issuance the transform belongs to."""
        return self._jti

    @property
    def input_name(self) -> str:
        """The model input the device transforms."""
        return self._input

    @property
    def check(self) -> bytes:
        """The 16-byte check value written to the manifest."""
        return self._check

    def __repr__(self) -> str:
        return f"BindingTransform(type={BINDING_TYPE!r}, dim={self.dim}, jti={self._jti!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("binding transforms cannot be pickled")


def _check_jti(jti: object) -> str:
    if not isinstance(jti, str) or not 1 <= len(jti) <= MAX_JTI_CHARS:
        raise UsageError(f"jti must be a string of 1..{MAX_JTI_CHARS} characters")
    return jti


def _check_dim(dim: object) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or not MIN_DIM <= dim <= MAX_DIM:
        raise UsageError(f"dim must be an integer {MIN_DIM}..{MAX_DIM}, got {dim!r}")
    return dim


def _check_input_name(name: object) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_INPUT_NAME_CHARS:
        raise UsageError(f"input name must be a string of 1..{MAX_INPUT_NAME_CHARS} characters")
    if not name.isprintable():
        raise UsageError(f"input name must not contain control characters, got {name!r}")
    return name


def _seed(device_secret: bytes, jti: str) -> bytes:
    if not isinstance(device_secret, bytes | bytearray) or len(device_secret) < MIN_SECRET_BYTES:
        raise UsageError(f"the device binding secret must be at least {MIN_SECRET_BYTES} bytes")
    info = BINDING_INFO_LABEL + jti.encode("utf-8")
    return HKDF(hashes.SHA256(), SEED_BYTES, None, info).derive(bytes(device_secret))


def _orthogonal(seed: bytes, dim: int) -> F64:
    count = dim * dim
    pairs = (count + 1) // 2  # Box-Muller makes two normals at a time; an odd one is dropped
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    words = np.frombuffer(encryptor.update(bytes(16 * pairs)), dtype="<u8") >> np.uint64(11)
    # Each word keeps its top 53 bits, so every conversion to a double below is exact.
    uniform = words.astype(np.float64) / 2.0**53
    # (v + 1) / 2^53 lies in (0, 1], so the logarithm is finite.
    radius = np.sqrt(-2.0 * np.log((words[0::2] + np.uint64(1)).astype(np.float64) / 2.0**53))
    angle = 2.0 * math.pi * uniform[1::2]
    gaussian = np.empty(2 * pairs, dtype=np.float64)
    gaussian[0::2] = radius * np.cos(angle)
    gaussian[1::2] = radius * np.sin(angle)
    q, r = np.linalg.qr(gaussian[:count].reshape(dim, dim))
    # QR is unique once R's diagonal is positive; LAPACK does not promise the signs.
    signs = np.where(np.diag(r) < 0.0, -1.0, 1.0)
    out: F64 = q * signs[None, :]
    return out


def _check_value(seed: bytes) -> bytes:
    return hmac.new(seed, BINDING_CHECK_LABEL, hashlib.sha256).digest()[:CHECK_BYTES]


def derive_transform(
    device_secret: bytes, jti: str, *, dim: int = 64, input_name: str = "input"
) -> BindingTransform:
    """The transform of issuance ``jti`` to the device holding ``device_secret``.

    Args:
        device_secret: The device's binding secret (at least 32 bytes), shared by the
            server and the device; it never travels in a bundle.
        jti: The issuance id (the container's ``jti``).
        dim: Features per example: the bound layer's input width.
        input_name: The model input the device transforms.

    Raises:
        UsageError: The secret is too short, or ``jti``, ``dim`` or ``input_name`` is malformed.
    """
    jti = _check_jti(jti)
    dim = _check_dim(dim)
    input_name = _check_input_name(input_name)
    seed = _seed(device_secret, jti)
    return BindingTransform(
        _orthogonal(seed, dim), jti=jti, input_name=input_name, check=_check_value(seed)
    )


def derive_seed(device_secret: bytes, jti: str) -> bytes:
    """The 32-byte seed of issuance ``jti`` for ``device_secret`` (the first line of the
    derivation above); :func:`transform_from_seed` turns it into the transform.

    Raises:
        UsageError: The secret is shorter than 32 bytes or ``jti`` is malformed.
    """
    return _seed(device_secret, _check_jti(jti))


def transform_from_seed(
    seed: bytes, jti: str, *, dim: int = 64, input_name: str = "input"
) -> BindingTransform:
    """The transform a seed from :func:`derive_seed` gives; equal to :func:`derive_transform`'s.

    Raises:
        UsageError: The seed is not 32 bytes, or ``jti``, ``dim`` or ``input_name`` is
            malformed.
    """
    if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_BYTES:
        raise UsageError(f"a binding seed must be {SEED_BYTES} bytes")
    jti = _check_jti(jti)
    dim = _check_dim(dim)
    input_name = _check_input_name(input_name)
    seed = bytes(seed)
    return BindingTransform(
        _orthogonal(seed, dim), jti=jti, input_name=input_name, check=_check_value(seed)
    )


def apply_transform(x: npt.ArrayLike, transform: BindingTransform) -> npt.NDArray[np.floating]:
    """``x' = A x`` for each example of ``x`` (``[..., dim]``); what the SDK does per inference.

    Computed in float64; returned in ``x``'s floating dtype (float32 for integer input).

    Raises:
        UsageError: The last dimension of ``x`` is not ``dim``.
    """
    array = np.asarray(x)
    if array.ndim < 1 or array.shape[-1] != transform.dim:
        raise UsageError(f"inputs must have shape [..., {transform.dim}], got {array.shape}")
    dtype = array.dtype if array.dtype.kind == "f" else np.dtype(np.float32)
    out: npt.NDArray[np.floating] = (array.astype(np.float64) @ transform.matrix.T).astype(dtype)
    return out


def _layer(
    weights: Mapping[str, npt.NDArray[np.generic]], layer: str, dim: int
) -> npt.NDArray[np.generic]:
    array = weights.get(layer)
    if array is None:
        raise UsageError(f"weights have no tensor named {layer!r}")
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f":
        raise UsageError(f"tensor {layer!r} must be a floating-point numpy array")
    if array.ndim != 2 or array.shape[1] != dim:
        raise UsageError(f"tensor {layer!r} must have shape [out, {dim}], got {array.shape}")
    return array


def bind_weights(
    weights: Mapping[str, npt.NDArray[np.generic]],
    transform: BindingTransform,
    *,
    layer: str = "fc1.weight",
) -> dict[str, npt.NDArray[np.generic]]:
    """Fold the transform into the first layer: ``W' = W A^T`` (``W`` is ``[out, in]``).

    Returns:
        A new mapping with ``layer`` replaced (float64 maths, dtype kept); the input is
        not changed.

    Raises:
        UsageError: ``layer`` is missing, not floating point, or not ``[out, dim]``.
    """
    w = _layer(weights, layer, transform.dim)
    out = dict(weights)
    out[layer] = (w.astype(np.float64) @ transform.matrix.T).astype(w.dtype)
    return out


def unbind_weights(
    weights: Mapping[str, npt.NDArray[np.generic]],
    transform: BindingTransform,
    *,
    layer: str = "fc1.weight",
) -> dict[str, npt.NDArray[np.generic]]:
    """Undo :func:`bind_weights`: ``W = W' A``. Forensics uses it on a leaked bound model."""
    w = _layer(weights, layer, transform.dim)
    out = dict(weights)
    out[layer] = (w.astype(np.float64) @ transform.matrix).astype(w.dtype)
    return out


def bind_onnx(model: bytes, transform: BindingTransform, *, layer: str = "fc1.weight") -> bytes:
    """:func:`bind_weights` on an ONNX model's initializer ``layer``; nothing else changes.

    The layer must be stored ``[out, in]`` and used as ``Gemm(transB = 1)`` on the model's
    input, as in the reference model.
    """
    from modelseal.models.onnx_adapter import ONNXModel

    onnx_model = ONNXModel(model)
    bound = bind_weights({layer: onnx_model.read(layer)}, transform, layer=layer)
    onnx_model.replace(layer, bound[layer])
    return onnx_model.to_bytes()


def _b64u_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64u_decode(text: str) -> bytes | None:
    if not _B64U.fullmatch(text) or len(text) % 4 == 1:
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if _b64u_encode(raw) == text else None


def binding_manifest(
    transform: BindingTransform, *, seed: bytes | None = None
) -> dict[str, str | int]:
    """The manifest's ``binding`` object for ``transform``: parameters, never the matrix.

    Args:
        transform: The issuance's transform.
        seed: When given, the issuance's seed (:func:`derive_seed`) is written as member
            ``seed``, so that the device needs no binding secret of its own. Only a bundle
            sealed to the device may carry it.

    Raises:
        UsageError: ``seed`` is not the seed of ``transform``.
    """
    obj: dict[str, str | int] = {
        "type": BINDING_TYPE,
        "input": transform.input_name,
        "dim": transform.dim,
        "jti": transform.jti,
        "check": _b64u_encode(transform.check),
    }
    if seed is not None:
        if (
            not isinstance(seed, bytes | bytearray)
            or len(seed) != SEED_BYTES
            or not hmac.compare_digest(_check_value(bytes(seed)), transform.check)
        ):
            raise UsageError("seed is not the seed of this transform")
        obj["seed"] = _b64u_encode(bytes(seed))
    return obj


def transform_from_manifest(
    binding: Mapping[str, object], device_secret: bytes | None = None
) -> BindingTransform:
    """Rebuild the transform a bundle's ``binding`` object describes, on the device.

    A ``seed`` member, when present, gives the transform (the device secret is then not
    needed, and ignored); otherwise ``device_secret`` does. Either way the result must
    reproduce ``check``.

    Raises:
        BundleError: The object is not an ``orthogonal-v1`` binding as specified (members,
            types, ranges, canonical base64url).
        BindingMismatchError: The seed, or ``device_secret``, does not give ``check``.
        UsageError: No seed in the object and ``device_secret`` is missing or shorter
            than 32 bytes.
    """
    if not isinstance(binding, Mapping):
        raise BundleError("binding must be an object")
    keys = set(binding)
    if not _MANIFEST_MEMBERS <= keys <= _MANIFEST_MEMBERS | _OPTIONAL_MEMBERS:
        allowed = _MANIFEST_MEMBERS | _OPTIONAL_MEMBERS
        missing, unknown = sorted(_MANIFEST_MEMBERS - keys), sorted(keys - allowed)
        what = f"lacks member {missing[0]!r}" if missing else f"has unknown member {unknown[0]!r}"
        raise BundleError(f"binding {what}")
    if binding["type"] != BINDING_TYPE:
        raise BundleError(f"binding.type must be {BINDING_TYPE!r}, got {binding['type']!r}")
    try:
        jti = _check_jti(binding["jti"])
        dim = _check_dim(binding["dim"])
        input_name = _check_input_name(binding["input"])
    except UsageError as exc:
        raise BundleError(f"binding: {exc.message}") from None
    raw_check = binding["check"]
    check_value = _b64u_decode(raw_check) if isinstance(raw_check, str) else None
    if check_value is None or len(check_value) != CHECK_BYTES:
        raise BundleError(f"binding.check must be canonical base64url of {CHECK_BYTES} bytes")
    if "seed" in binding:
        raw_seed = binding["seed"]
        decoded = _b64u_decode(raw_seed) if isinstance(raw_seed, str) else None
        if decoded is None or len(decoded) != SEED_BYTES:
            raise BundleError(f"binding.seed must be canonical base64url of {SEED_BYTES} bytes")
        seed = decoded
    elif device_secret is None:
        raise UsageError("the binding carries no seed: the device binding secret is needed")
    else:
        seed = _seed(device_secret, jti)
    if not hmac.compare_digest(_check_value(seed), check_value):
        raise BindingMismatchError("binding check failed") from None
    return BindingTransform(
        _orthogonal(seed, dim), jti=jti, input_name=input_name, check=check_value
    )
