"""The reference task's data: scikit-learn's digits, a fixed split, and per-user handwriting.

The 1797 8x8 digit images ship with scikit-learn, so everything runs offline. Pixel
intensities (0..16) are divided by 16: every array here, and the reference model's
``input``, holds values in ``[0, 1]``, row-major, 64 per image.

Each simulated user writes in a "style": a small affine warp (slant, rotation,
stretch, shift) and a stroke-contrast curve, derived from the user id alone. A
model trained on the plain digits loses a large part of its accuracy on a user's
styled digits; fine-tuning on a few of that user's own examples wins most of it
back, which is what makes the per-user model (the IML) worth issuing.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from modelseal.errors import UsageError

__all__ = [
    "IMAGE_SIDE",
    "NUM_CLASSES",
    "NUM_FEATURES",
    "DigitsSplit",
    "Style",
    "apply_style",
    "check_user_id",
    "load_split",
    "user_examples",
    "user_holdout",
    "user_style",
]

IMAGE_SIDE = 8
NUM_FEATURES = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10
TEST_SIZE = 450
_NUM_DIGITS = 1797
MAX_USER_ID_CHARS = 256

_SPLIT_SEED = 20240601
_STYLE_LABEL = b"modelseal/1 reference style"
_EXAMPLES_LABEL = b"modelseal/1 reference examples"
_CENTRE = (IMAGE_SIDE - 1) / 2

Floats = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class DigitsSplit:
    """The fixed train/test split (read-only arrays).

    Attributes:
        x_train: Training images, ``[1347, 64]`` float32 in ``[0, 1]``.
        y_train: Training labels, ``[1347]`` int64.
        x_test: Held-out images, ``[450, 64]``.
        y_test: Held-out labels, ``[450]``.
    """

    x_train: Floats
    y_train: Labels
    x_test: Floats
    y_test: Labels


_split_lock = threading.Lock()
_split: DigitsSplit | None = None


def _frozen(array: npt.NDArray[np.generic]) -> None:
    array.flags.writeable = False


def _digits_from_package_data() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]] | None:
    """Read the CSV that ``load_digits`` reads, without importing scikit-learn.

    Importing ``sklearn.datasets`` pulls in SciPy and takes seconds; the data is one
    small gzip file. ``None`` when the file is not where scikit-learn keeps it.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets/data/digits.csv.gz"
    if not path.is_file():
        return None
    with gzip.open(path, "rt", encoding="ascii") as stream:
        table = np.loadtxt(stream, delimiter=",", dtype=np.float64)
    if table.shape != (_NUM_DIGITS, NUM_FEATURES + 1):
        return None
    return table[:, :NUM_FEATURES], table[:, NUM_FEATURES].astype(np.int64)


def _digits_from_sklearn() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    digits = load_digits()
    return np.asarray(digits.data, dtype=np.float64), np.asarray(digits.target, dtype=np.int64)


def load_split() -> DigitsSplit:
    """The digits split, loaded once per process.

    The split is a permutation from a fixed seed, so every process, test and
    report uses the same images for training and for evaluation.
    """
    global _split
    with _split_lock:
        if _split is None:
            loaded = _digits_from_package_data() or _digits_from_sklearn()
            x, y = loaded[0] / 16.0, loaded[1]
            order = np.random.default_rng(_SPLIT_SEED).permutation(len(y))
            test, train = np.sort(order[:TEST_SIZE]), np.sort(order[TEST_SIZE:])
            arrays = (
                x[train].astype(np.float32),
                y[train],
                x[test].astype(np.float32),
                y[test],
            )
            for array in arrays:
                _frozen(array)
            _split = DigitsSplit(*arrays)
        return _split


@dataclass(frozen=True, slots=True)
class Style:
    """One user's handwriting, as a transform of a plain digit.

    Attributes:
        slant: Horizontal shear per row below the centre, in pixels per pixel (italics).
        rotation_radians: Rotation about the image centre.
        scale_rows: Vertical stretch.
        scale_cols: Horizontal stretch.
        shift_rows: Downward shift in pixels.
        shift_cols: Rightward shift in pixels.
        gamma: Stroke-contrast exponent applied to intensities (below 1 thickens strokes).
    """

    slant: float
    rotation_radians: float
    scale_rows: float
    scale_cols: float
    shift_rows: float
    shift_cols: float
    gamma: float


def check_user_id(user_id: str) -> None:
    """Refuse a user id that is not a string of 1..256 characters (``UsageError``)."""
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= MAX_USER_ID_CHARS:
        raise UsageError(f"user_id must be a string of 1..{MAX_USER_ID_CHARS} characters")


def _uniforms(label: bytes, user_id: str, count: int) -> npt.NDArray[np.float64]:
    digest = hashlib.shake_256(label + b"\x00" + user_id.encode("utf-8")).digest(8 * count)
    return np.frombuffer(digest, dtype="<u8").astype(np.float64) / 2.0**64


def user_style(user_id: str) -> Style:
    """The style of ``user_id``: a pure function of the id.

    Ranges were chosen so that every style is clearly visible (the slant is at
    least 0.2 and the shift at least 0.5 pixels) yet still legible.

    Raises:
        UsageError: ``user_id`` is not a string of 1..256 characters.
    """
    check_user_id(user_id)
    u = _uniforms(_STYLE_LABEL, user_id, 8)
    direction = 2 * np.pi * u[5]
    shift = 0.5 + 0.4 * u[6]
    return Style(
        slant=float((0.2 + 0.2 * u[0]) * (1 if u[1] < 0.5 else -1)),
        rotation_radians=float(np.deg2rad(-8 + 16 * u[2])),
        scale_rows=float(0.9 + 0.2 * u[3]),
        scale_cols=float(0.9 + 0.2 * u[4]),
        shift_rows=float(shift * np.sin(direction)),
        shift_cols=float(shift * np.cos(direction)),
        gamma=float(0.6 + 0.8 * u[7]),
    )


def apply_style(images: npt.ArrayLike, style: Style) -> Floats:
    """Render plain digits in ``style``.

    Each output pixel samples the input, bilinearly, at the point that the inverse
    of the style's affine map sends it to (zero outside the image); intensities
    are then raised to ``gamma``.

    Args:
        images: ``[n, 64]`` intensities in ``[0, 1]``.
        style: The handwriting to render in.

    Returns:
        ``[n, 64]`` float32 in ``[0, 1]``.
    """
    x = np.asarray(images, dtype=np.float64).reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    cos, sin = np.cos(style.rotation_radians), np.sin(style.rotation_radians)
    rotate = np.array([[cos, -sin], [sin, cos]])
    slant = np.array([[1.0, 0.0], [-style.slant, 1.0]])
    stretch = np.diag([style.scale_rows, style.scale_cols])
    inverse = np.linalg.inv(rotate @ slant @ stretch)
    rows, cols = np.meshgrid(np.arange(IMAGE_SIDE), np.arange(IMAGE_SIDE), indexing="ij")
    target = np.stack([rows - _CENTRE - style.shift_rows, cols - _CENTRE - style.shift_cols], -1)
    source = target @ inverse.T + _CENTRE
    r0 = np.floor(source[..., 0]).astype(np.int64)
    c0 = np.floor(source[..., 1]).astype(np.int64)
    fr = source[..., 0] - r0
    fc = source[..., 1] - c0
    out = np.zeros_like(x)
    for dr, dc, weight in (
        (0, 0, (1 - fr) * (1 - fc)),
        (1, 0, fr * (1 - fc)),
        (0, 1, (1 - fr) * fc),
        (1, 1, fr * fc),
    ):
        r, c = r0 + dr, c0 + dc
        inside = (r >= 0) & (r < IMAGE_SIDE) & (c >= 0) & (c < IMAGE_SIDE)
        sampled = x[:, np.clip(r, 0, IMAGE_SIDE - 1), np.clip(c, 0, IMAGE_SIDE - 1)]
        out += np.where(inside, sampled, 0.0) * weight
    styled = np.clip(out, 0.0, 1.0) ** style.gamma
    return styled.reshape(-1, NUM_FEATURES).astype(np.float32)


def user_examples(user_id: str, n: int) -> tuple[Floats, Labels]:
    """The user's own labelled examples: ``n`` training digits, chosen per user, in their style.

    Raises:
        UsageError: ``n`` is not 1..1347, or ``user_id`` is invalid.
    """
    check_user_id(user_id)
    split = load_split()
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(split.y_train):
        raise UsageError(f"n must be 1..{len(split.y_train)}, got {n!r}")
    seed = int.from_bytes(
        hashlib.sha256(_EXAMPLES_LABEL + b"\x00" + user_id.encode("utf-8")).digest()[:8], "big"
    )
    chosen = np.sort(np.random.default_rng(seed).choice(len(split.y_train), n, replace=False))
    return apply_style(split.x_train[chosen], user_style(user_id)), split.y_train[chosen].copy()


def user_holdout(user_id: str) -> tuple[Floats, Labels]:
    """The whole held-out split in the user's style: what their IML is judged on."""
    split = load_split()
    return apply_style(split.x_test, user_style(user_id)), split.y_test.copy()
