"""Uploading the user's personalisation examples (``POST /v1/examples``).

The server personalises the reference model on examples the device uploads
(``docs/SERVER.md``, "Examples"): ``x`` is ``n x 64`` intensities in ``[0, 1]`` and
``y`` is ``n`` labels ``0..9``. This module checks them as the server will, and
splits them into requests that fit the server's body limit: each value is sent as
the shortest decimal that reads back as the same float32, and rows are packed
greedily until a request would pass ``max_request_bytes``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from modelseal.errors import UsageError

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "EXAMPLE_FEATURES",
    "ExamplesUpload",
    "batches",
    "check_examples",
]

EXAMPLE_FEATURES = 64
DEFAULT_MAX_REQUEST_BYTES = 60_000
"""Below the server's default ``max_body_bytes`` (64 KiB), with room for the envelope."""
DEFAULT_MAX_ROWS_PER_REQUEST = 512
"""The server's default ``examples.max_examples_per_upload``."""
_ENVELOPE_BYTES = 32


@dataclass(frozen=True, slots=True)
class ExamplesUpload:
    """One stored upload, as the server reported it.

    Attributes:
        record_id: The upload's id (for deleting it).
        count: Examples in it.
        expires_at: When the server deletes it (Unix seconds).
        total: The user's live examples on the server after it.
    """

    record_id: str
    count: int
    expires_at: int
    total: int


def check_examples(
    x: npt.ArrayLike, y: npt.ArrayLike
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Check examples as the server will, before any byte is sent.

    Raises:
        UsageError: ``x`` is not ``[n, 64]`` finite values in ``[0, 1]`` with ``n >= 1``,
            or ``y`` is not ``n`` integer labels ``0..9``.
    """
    xs, ys = np.asarray(x), np.asarray(y)
    if xs.ndim != 2 or xs.shape[1] != EXAMPLE_FEATURES or xs.shape[0] == 0:
        raise UsageError(f"x must have shape [n >= 1, {EXAMPLE_FEATURES}], got {list(xs.shape)}")
    if xs.dtype.kind not in "fiu":
        raise UsageError(f"x must be numeric, got {xs.dtype}")
    x32 = xs.astype(np.float32)
    if not np.all(np.isfinite(x32)) or x32.min() < 0.0 or x32.max() > 1.0:
        raise UsageError("x must hold finite values in [0, 1]")
    if ys.shape != (xs.shape[0],) or ys.dtype.kind not in "iu":
        raise UsageError(f"y must be {xs.shape[0]} integer labels, got {ys.dtype} {list(ys.shape)}")
    if ys.min() < 0 or ys.max() > 9:
        raise UsageError("y must hold labels 0..9")
    return x32, ys.astype(np.int64)


def _row(values: npt.NDArray[np.float32]) -> list[float]:
    # The shortest decimal that identifies each float32; the server reads it as a
    # float64 and casts it back to exactly this float32.
    return [float(np.format_float_positional(v, unique=True, trim="0")) for v in values]


def batches(
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int64],
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_rows: int = DEFAULT_MAX_ROWS_PER_REQUEST,
) -> Iterator[dict[str, list[list[float]] | list[int]]]:
    """Split checked examples into request bodies of at most ``max_request_bytes``.

    Raises:
        UsageError: One example alone does not fit in ``max_request_bytes``.
    """
    rows: list[list[float]] = []
    labels: list[int] = []
    size = _ENVELOPE_BYTES
    for values, label in zip(x, y, strict=True):
        row = _row(values)
        # json.dumps with its default separators is the widest encoding a client uses.
        row_bytes = len(json.dumps(row)) + len(str(int(label))) + 4
        if _ENVELOPE_BYTES + row_bytes > max_request_bytes:
            raise UsageError(f"one example needs {row_bytes} bytes; max_request_bytes is too small")
        if rows and (size + row_bytes > max_request_bytes or len(rows) == max_rows):
            yield {"x": rows, "y": labels}
            rows, labels, size = [], [], _ENVELOPE_BYTES
        rows.append(row)
        labels.append(int(label))
        size += row_bytes
    if rows:
        yield {"x": rows, "y": labels}
