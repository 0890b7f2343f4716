"""Forensic watermarks: a keyed spread-spectrum mark per issuance, found again without the copy.

Each issuance gets its own key, ``HKDF-SHA256(server secret, info = label || jti)``. The key
expands (AES-256-CTR) into a pattern over the marked tensors' weights: about half of the
positions, each ``+1`` or ``-1``. Embedding adds ``strength * rms(tensor)`` times the pattern
to the weights. Detection is blind: it needs the suspect's weights and the base model's, never
the issued copy. It correlates the suspect's departure from the base with each candidate's
pattern and reports a z-score and a p-value per candidate (``docs/WATERMARK.md``).

Why the statistic is honest: for a key that did not mark the suspect, the pattern's signs are
independent of the residual, so ``z = sum(p * u) / sqrt(sum(p^2 * u^2))`` is a sum of
independently signed terms with variance exactly 1 whatever the residual holds (fine-tuning,
quantisation, noise). The p-value is the normal tail; ``exp(-z^2/2)`` (Hoeffding) bounds it
without any assumption about the residual's distribution.

Before correlating, each row of a suspect tensor is fitted to the base's row by least squares
(a scale and an offset). That undoes quantisation to integers with a scale and zero point,
and positive per-unit rescaling; :func:`align_hidden_units` also undoes a permutation of hidden
units. None of it depends on the candidate key, so the null distribution stays as it was.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import NoReturn

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from modelseal.errors import UsageError

__all__ = [
    "DEFAULT_SPEC",
    "DETECTION_P_VALUE",
    "DETECTION_Z",
    "WATERMARK_INFO_LABEL",
    "Match",
    "WatermarkKey",
    "WatermarkSpec",
    "align_hidden_units",
    "detect",
    "embed",
    "embed_onnx",
    "p_value",
    "read_weights",
    "write_weights",
]

WATERMARK_INFO_LABEL = b"modelseal/1 watermark"
"""HKDF ``info`` prefix; the issuance id (``jti``, UTF-8) follows it."""

KEY_BYTES = 32
MIN_SECRET_BYTES = 32
MAX_JTI_CHARS = 255  # as the container's jti claim (FORMAT.md)

DETECTION_P_VALUE = 1e-6
DETECTION_Z = 4.753424308822899
"""The z-score whose one-sided normal tail is :data:`DETECTION_P_VALUE`."""

_COUNTER_ZERO = bytes(16)
_ERASED_ROW_CORRELATION = 0.5
_MIN_ROW_ELEMENTS = 16  # shorter rows are fitted as one: two parameters would absorb the mark
_DEFAULT_CHUNK = 1024

Weights = Mapping[str, npt.NDArray[np.generic]]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class WatermarkSpec:
    """Which weights carry the mark and how strongly. Detection must use the embedding's spec.

    Attributes:
        tensors: Names of the marked tensors; the pattern runs over their elements in this
            order, each row-major.
        strength: Amplitude of the mark in each tensor, as a fraction of that tensor's RMS.
        density: Positions marked out of every 128 on average (64: one half).
    """

    tensors: tuple[str, ...] = ("fc1.weight",)
    strength: float = 0.06
    density: int = 64

    def __post_init__(self) -> None:
        names: object = self.tensors
        if isinstance(names, str) or not isinstance(names, tuple | list):
            raise UsageError(f"tensors must be a sequence of names, got {names!r}")
        if not all(isinstance(name, str) for name in names):
            raise UsageError(f"tensors must be a sequence of names, got {names!r}")
        object.__setattr__(self, "tensors", tuple(names))
        if not self.tensors or len(set(self.tensors)) != len(self.tensors):
            raise UsageError(f"tensors must be distinct names, at least one, got {self.tensors}")
        if not (isinstance(self.strength, float | int) and 0.0 < self.strength < 1.0):
            raise UsageError(f"strength must be in (0, 1), got {self.strength!r}")
        if isinstance(self.density, bool) or not isinstance(self.density, int):
            raise UsageError(f"density must be an integer 1..128, got {self.density!r}")
        if not 1 <= self.density <= 128:
            raise UsageError(f"density must be 1..128, got {self.density}")

    def _sign_table(self) -> F64:
        # Keystream byte b marks its position iff (b >> 1) < density; the sign is its low bit.
        b = np.arange(256)
        table: F64 = np.where((b >> 1) < self.density, np.where(b & 1, 1.0, -1.0), 0.0)
        return table


DEFAULT_SPEC = WatermarkSpec()
"""For the reference 64-64-10 model: half of ``fc1.weight`` (about 2048 of 4096 weights),
marked at 6% of its RMS. ``docs/WATERMARK.md`` gives the measurements behind the choice."""


def _check_jti(jti: object) -> str:
    if not isinstance(jti, str) or not 1 <= len(jti) <= MAX_JTI_CHARS:
        raise UsageError(f"jti must be a string of 1..{MAX_JTI_CHARS} characters")
    return jti


class WatermarkKey:
    """The watermark key of one issuance. Holds a secret: not printable, not picklable.

    Args:
        jti: The issuance id the key belongs to.
        key: 32 key bytes, as :meth:`derive` makes them.
    """

    __slots__ = ("_jti", "_key")

    def __init__(self, jti: str, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
            raise UsageError(f"a watermark key must be {KEY_BYTES} bytes")
        self._jti = _check_jti(jti)
        self._key = bytes(key)

    @classmethod
    def derive(cls, secret: bytes, jti: str) -> WatermarkKey:
        """``HKDF-SHA256(ikm = secret, salt = none, info = WATERMARK_INFO_LABEL || jti)``.

        Args:
            secret: The server's watermark secret, at least 32 bytes.
            jti: The issuance id (the container's ``jti`` claim), 1..255 characters.

        Raises:
            UsageError: The secret is shorter than 32 bytes or the jti is malformed.
        """
        if not isinstance(secret, bytes | bytearray) or len(secret) < MIN_SECRET_BYTES:
            raise UsageError(f"the watermark secret must be at least {MIN_SECRET_BYTES} bytes")
        info = WATERMARK_INFO_LABEL + _check_jti(jti).encode("utf-8")
        return cls(jti, HKDF(hashes.SHA256(), KEY_BYTES, None, info).derive(bytes(secret)))

    @property
    def jti(self) -> str:
        """The issuance id."""
        return self._jti

    def _keystream_into(self, out: memoryview, zeros: bytes) -> None:
        """Write AES-256-CTR keystream (counter block 0, then 1, ...) over ``len(zeros)`` bytes.

        ``out`` needs 15 bytes of slack past ``len(zeros)`` (pyca's ``update_into`` rule).
        """
        encryptor = Cipher(algorithms.AES(self._key), modes.CTR(_COUNTER_ZERO)).encryptor()
        encryptor.update_into(zeros, out)

    def pattern(self, size: int, spec: WatermarkSpec = DEFAULT_SPEC) -> npt.NDArray[np.int8]:
        """The ``{-1, 0, +1}`` pattern over ``size`` positions under ``spec``'s density."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise UsageError(f"size must be a positive integer, got {size!r}")
        buf = np.zeros(size + 15, dtype=np.uint8)
        self._keystream_into(buf.data, bytes(size))
        return spec._sign_table()[buf[:size]].astype(np.int8)

    def __repr__(self) -> str:
        return f"WatermarkKey(jti={self._jti!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("keys cannot be pickled")


@dataclass(frozen=True, slots=True)
class Match:
    """One candidate's score against a suspect.

    Attributes:
        jti: The candidate issuance.
        z: Normalised correlation; about ``N(0, 1)`` for a key that did not mark the suspect.
        p_value: One-sided normal tail ``P(Z >= z)``: about the chance that one given wrong
            key scores this high; for any suspect the true chance is at most 3.18 times
            this (``docs/WATERMARK.md`` section 1.5).
        family_p_value: ``min(1, n * p_value)`` for the ``n`` candidates scored together: a
            bound on the chance that any wrong candidate of the scan scores this high. This
            is the figure to act on when many issuances were scanned.
    """

    jti: str
    z: float
    p_value: float
    family_p_value: float

    @property
    def p_bound(self) -> float:
        """``exp(-z^2 / 2)``: a bound on ``p_value`` that holds whatever the residual's shape."""
        return math.exp(-0.5 * self.z * self.z) if self.z > 0 else 1.0

    @property
    def significant(self) -> bool:
        """Whether ``family_p_value`` is below :data:`DETECTION_P_VALUE`."""
        return self.family_p_value < DETECTION_P_VALUE


def p_value(z: float) -> float:
    """The one-sided standard normal tail ``P(Z >= z)``, accurate far into the tail."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def _tensor(weights: Weights, name: str, what: str) -> npt.NDArray[np.generic]:
    array = weights.get(name)
    if array is None:
        raise UsageError(f"{what} has no tensor named {name!r}")
    if not isinstance(array, np.ndarray) or array.dtype.kind != "f" or array.ndim < 1:
        raise UsageError(f"{what} tensor {name!r} must be a floating-point numpy array")
    return array


def _rms(array: F64, what: str) -> float:
    rms = math.sqrt(float(np.mean(array * array)))
    if not rms > 0.0 or not math.isfinite(rms):
        raise UsageError(f"{what} must have a finite, non-zero RMS")
    return rms


def embed(
    weights: Weights, key: WatermarkKey, spec: WatermarkSpec = DEFAULT_SPEC
) -> dict[str, npt.NDArray[np.generic]]:
    """Mark ``weights`` for the issuance of ``key``.

    Each marked tensor ``w`` becomes ``w + spec.strength * rms(w) * pattern`` (computed in
    float64, stored in ``w``'s dtype). The input is not changed.

    Returns:
        A new mapping with the marked tensors replaced and every other tensor as it was.

    Raises:
        UsageError: A tensor of ``spec`` is missing, not floating point, or all zero.
    """
    tensors = [_tensor(weights, name, "weights") for name in spec.tensors]
    pattern = key.pattern(sum(t.size for t in tensors), spec)
    out = dict(weights)
    start = 0
    for name, tensor in zip(spec.tensors, tensors, strict=True):
        w = tensor.astype(np.float64)
        signs = pattern[start : start + w.size].reshape(w.shape)
        start += w.size
        step = spec.strength * _rms(w, f"tensor {name!r}")
        out[name] = (w + step * signs).astype(tensor.dtype)
    return out


def _aligned_residual(suspect: F64, reference: F64) -> F64:
    """``suspect`` row by row mapped onto ``reference``'s scale and offset, minus ``reference``.

    Rows are taken along the first axis (a layer's output units), or the whole tensor is one
    row when rows would hold fewer than 16 elements (biases, narrow layers). A row whose correlation
    with the reference's row is below 0.5 was overwritten or zeroed; it yields zeros, so it
    neither helps nor harms any candidate.
    """
    rows = reference.shape[0] if reference.size >= _MIN_ROW_ELEMENTS * reference.shape[0] else 1
    s = suspect.reshape(rows, -1)
    b = reference.reshape(rows, -1)
    sc = s - s.mean(axis=1, keepdims=True)
    bc = b - b.mean(axis=1, keepdims=True)
    cross = np.sum(sc * bc, axis=1)
    b_power = np.sum(bc * bc, axis=1)
    s_power = np.sum(sc * sc, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = cross / b_power
        correlation = cross / np.sqrt(b_power * s_power)
        residual = sc / scale[:, None] - bc
    erased = ~(correlation >= _ERASED_ROW_CORRELATION)  # also catches NaN
    residual[erased] = 0.0
    out: F64 = residual.reshape(-1)
    return out


def _residual(suspect: Weights, reference: Weights, spec: WatermarkSpec) -> F64:
    parts = []
    for name in spec.tensors:
        s = _tensor(suspect, name, "suspect").astype(np.float64)
        b = _tensor(reference, name, "reference").astype(np.float64)
        if not (np.all(np.isfinite(s)) and np.all(np.isfinite(b))):
            raise UsageError(f"tensor {name!r} holds NaN or infinite values")
        if s.shape != b.shape:
            raise UsageError(
                f"suspect tensor {name!r} has shape {s.shape}, the reference {b.shape}; "
                "transpose or reshape it to the reference's layout first"
            )
        parts.append(_aligned_residual(s, b) / _rms(b, f"reference tensor {name!r}"))
    return np.concatenate(parts)


def detect(
    suspect: Weights,
    reference: Weights,
    candidates: Iterable[WatermarkKey],
    spec: WatermarkSpec = DEFAULT_SPEC,
    *,
    chunk_size: int = _DEFAULT_CHUNK,
) -> list[Match]:
    """Score every candidate issuance against a suspect model, best first.

    Args:
        suspect: The suspect's weights (at least ``spec.tensors``), floating point, in the
            reference's layout. Integer-quantised weights may be passed as floats without
            their scale or zero point: the per-row fit recovers both.
        reference: The base model the issued copies were fine-tuned from. The unmarked copy
            of one issuance also works, and gives a far larger z for it.
        candidates: Keys of the issuances to test, such as every issuance of the model.
        spec: The spec the copies were marked with.
        chunk_size: Candidates scored per matrix product.

    Returns:
        One :class:`Match` per candidate, by decreasing ``z`` (ties by ``jti``). Each carries
        its own p-value and the family-wise one for this many candidates.

    Raises:
        UsageError: A tensor is missing, of another shape, not finite, or all zero in the
            reference.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise UsageError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    u = _residual(suspect, reference, spec)
    size = u.size
    u2 = u * u
    # float64 throughout, so that a score does not depend on how candidates were chunked.
    signs = spec._sign_table()
    marked = np.abs(signs)
    zeros = bytes(size)
    stream = np.empty((chunk_size, size + 15), dtype=np.uint8)
    scored: list[tuple[str, float]] = []
    iterator = iter(candidates)
    while chunk := list(islice(iterator, chunk_size)):
        for row, key in enumerate(chunk):
            key._keystream_into(stream[row].data, zeros)
        block = stream[: len(chunk), :size]
        numerator = signs[block] @ u
        power = marked[block] @ u2
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = np.where(power > 0, numerator / np.sqrt(power), 0.0)
        scored.extend((key.jti, float(value)) for key, value in zip(chunk, scores, strict=True))
    scored.sort(key=lambda item: (-item[1], item[0]))
    n = len(scored)
    return [Match(jti, z, p_value(z), min(1.0, n * p_value(z))) for jti, z in scored]


def _unit_order(similarity: F64) -> npt.NDArray[np.intp]:
    """Greedy one-to-one assignment, best pair first: ``order[j]`` is the row matched to ``j``."""
    rows, cols = similarity.shape
    order = np.full(cols, -1, dtype=np.intp)
    work = similarity.copy()
    for _ in range(min(rows, cols)):
        i, j = np.unravel_index(int(np.argmax(work)), work.shape)
        order[j] = i
        work[i, :] = -np.inf
        work[:, j] = -np.inf
    return order


def align_hidden_units(
    suspect: Weights,
    reference: Weights,
    *,
    layer_weight: str = "fc1.weight",
    layer_bias: str = "fc1.bias",
    next_weight: str = "fc2.weight",
) -> dict[str, npt.NDArray[np.generic]]:
    """Undo a permutation and positive rescaling of one ReLU layer's hidden units.

    Permuting a ReLU layer's units (rows of its weight and bias, columns of the next
    layer's weight), or scaling unit ``j`` by ``k > 0`` and the next layer's column ``j`` by
    ``1 / k``, leaves the model's function unchanged and moves every mark position. Each
    suspect unit is matched to the reference unit whose weight row it correlates with best
    (greedily, best pair first), then scaled back. Run this on a suspect before
    :func:`detect` when it may have been re-parameterised.

    Returns:
        The suspect's weights with the three tensors realigned (float64 maths, dtypes kept).

    Raises:
        UsageError: A tensor is missing or the shapes do not chain.
    """
    w = _tensor(suspect, layer_weight, "suspect")
    bias = _tensor(suspect, layer_bias, "suspect")
    nxt = _tensor(suspect, next_weight, "suspect")
    ref = _tensor(reference, layer_weight, "reference").astype(np.float64)
    units = ref.shape[0]
    if w.shape != ref.shape or bias.shape != (units,) or nxt.ndim != 2 or nxt.shape[1] != units:
        raise UsageError(
            f"{layer_weight} {w.shape}, {layer_bias} {bias.shape} and {next_weight} "
            f"{nxt.shape} do not chain as a layer of {units} units"
        )
    s = w.astype(np.float64).reshape(units, -1)
    sc = s - s.mean(axis=1, keepdims=True)
    rc = ref.reshape(units, -1) - ref.reshape(units, -1).mean(axis=1, keepdims=True)
    norms = np.linalg.norm(sc, axis=1)[:, None] * np.linalg.norm(rc, axis=1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        similarity = np.nan_to_num((sc @ rc.T) / norms, nan=-1.0)
    order = _unit_order(similarity)
    matched = s[order]
    # Least-squares positive scale of each matched unit against the reference unit.
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.sum(matched * ref.reshape(units, -1), axis=1) / np.sum(
            ref.reshape(units, -1) ** 2, axis=1
        )
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)
    out = dict(suspect)
    out[layer_weight] = (matched / scale[:, None]).reshape(w.shape).astype(w.dtype)
    out[layer_bias] = (bias.astype(np.float64)[order] / scale).astype(bias.dtype)
    out[next_weight] = (nxt.astype(np.float64)[:, order] * scale[None, :]).astype(nxt.dtype)
    return out


def read_weights(
    model: bytes, names: Sequence[str] = DEFAULT_SPEC.tensors
) -> dict[str, npt.NDArray[np.generic]]:
    """Read initializers ``names`` from ONNX bytes (copies, in their stored dtype).

    Raises:
        UsageError: No initializer has one of the names.
        ModelFormatError: The bytes are not a valid model.
    """
    from modelseal.models.onnx_adapter import ONNXModel

    onnx_model = ONNXModel(model)
    return {name: onnx_model.read(name) for name in names}


def write_weights(model: bytes, weights: Weights) -> bytes:
    """Overwrite initializers of ONNX bytes with ``weights``; every other byte is kept.

    Raises:
        UsageError: Unknown initializer, or an array of another dtype or shape.
        ModelFormatError: The bytes are not a valid model.
    """
    from modelseal.models.onnx_adapter import ONNXModel

    onnx_model = ONNXModel(model)
    for name, array in weights.items():
        onnx_model.replace(name, array)
    return onnx_model.to_bytes()


def embed_onnx(model: bytes, key: WatermarkKey, spec: WatermarkSpec = DEFAULT_SPEC) -> bytes:
    """:func:`embed` on an ONNX model's initializers; only their data bytes change."""
    marked = embed(read_weights(model, spec.tensors), key, spec)
    return write_weights(model, {name: marked[name] for name in spec.tensors})
