"""Loading an at-rest model into ONNX Runtime, from memory only.

:func:`load_at_rest` opens a device's at-rest package (rtype ``kek``) with its KEK,
which authenticates the header and judges the licence expiry (``lexp``) on every
load; then it decrypts the body from a read-only map of the file straight into one
uninitialised buffer and builds an
``onnxruntime.InferenceSession`` from it: small models as a whole, large ones as a
small graph plus their weights as external initializers read from that buffer
(:mod:`modelseal.client.onnx_split`). The plaintext never reaches a file, and
every buffer this module fills with it is zeroed once the session exists
(:mod:`modelseal.client.memory`); ONNX Runtime's own copies of the weights live as
long as the session.

Content types:

* ``application/vnd.modelseal.bundle`` (:mod:`modelseal.models.bundle`): the
  manifest is parsed, its entry file must be ONNX; the entry is checked against
  its SHA-256 and only that file is handed to the runtime;
* ``application/onnx`` (and ``application/vnd.onnx``): the plaintext is the model.

Anything else is refused with :class:`~modelseal.client.errors.ModelUnsupportedError`
before any decryption.
"""

from __future__ import annotations

import hashlib
import hmac
import mmap
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime  # type: ignore[import-untyped]
import onnxruntime.capi.onnxruntime_pybind11_state as _ort_state  # type: ignore[import-untyped]

from modelseal.client.errors import InputError, ModelUnsupportedError, PackageMismatchError
from modelseal.client.memory import WipeableBytes, wipe
from modelseal.client.onnx_split import ELEMENT_BYTES, split_initializers
from modelseal.envelope import Header, OpenPolicy, open_into, open_stream
from modelseal.errors import UsageError
from modelseal.keys import KEKWrapper
from modelseal.models.binding import BindingTransform, apply_transform, transform_from_manifest
from modelseal.models.bundle import BUNDLE_MEDIA_TYPE, MAGIC, BundleReader, Manifest
from modelseal.models.errors import BundleError
from modelseal.models.manifest import ModelFormat

__all__ = [
    "BUNDLE_MEDIA_TYPE",
    "ONNX_MEDIA_TYPES",
    "SPLIT_MIN_MODEL_BYTES",
    "LoadedModel",
    "TensorInfo",
    "load_at_rest",
    "session_from_plaintext",
]

SPLIT_MIN_MODEL_BYTES = 8 << 20
ONNX_MEDIA_TYPES = frozenset({"application/onnx", "application/vnd.onnx"})
LOADABLE_MEDIA_TYPES = ONNX_MEDIA_TYPES | {BUNDLE_MEDIA_TYPE}
_ORT_ERRORS: tuple[type[Exception], ...] = tuple(
    value
    for value in vars(_ort_state).values()
    if isinstance(value, type) and issubclass(value, Exception)
)
_UNSIGNED: Mapping[int, npt.DTypeLike] = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
_DTYPES: Mapping[str, npt.DTypeLike] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """An input or output of a loaded model.

    Attributes:
        name: The tensor name.
        type: ONNX Runtime's type string, such as ``tensor(float)``.
        shape: Dimensions; a string or None for a symbolic one.
    """

    name: str
    type: str
    shape: tuple[int | str | None, ...]


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model ready to run.

    Attributes:
        header: The at-rest package's authenticated header (claims, ctype, length).
        manifest: The bundle manifest, for a bundle; None for a bare ONNX model.
        session: The ``onnxruntime.InferenceSession``.
    """

    header: Header
    manifest: Manifest | None
    session: Any
    # The wiped plaintext buffer: ONNX Runtime copied the weights out of it while it
    # loaded, but its session options still point there, so it stays allocated.
    _buffer: WipeableBytes | None = field(default=None, repr=False, compare=False)
    # Sealed-weights loads: the zeroed tensor buffers and OrtValues the options point at.
    _pinned: tuple[Any, ...] = field(default=(), repr=False, compare=False)
    # A bound model's input transform (docs/WATERMARK.md section 2), from the manifest.
    _binding: BindingTransform | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Rebuild a bound model's input transform, so that no inference runs without it.

        Raises:
            BundleError: The manifest's ``binding`` object is malformed.
            BindingMismatchError: Its seed does not reproduce its check value.
            ModelUnsupportedError: The binding needs a device secret the SDK does not
                hold, or names an input the model lacks.
        """
        binding = self.manifest.fields.binding if self.manifest is not None else None
        if binding is None:
            return
        try:
            transform = transform_from_manifest(binding)
        except UsageError:
            raise ModelUnsupportedError(
                "the model is bound to a device secret that this SDK does not hold"
            ) from None
        if transform.input_name not in {i.name for i in self.inputs}:
            # Running without the transform would give noise: refuse instead.
            raise ModelUnsupportedError(
                f"the binding transforms input {transform.input_name!r}, which the model lacks"
            )
        object.__setattr__(self, "_binding", transform)

    @property
    def bound(self) -> bool:
        """Whether the model is bound: every inference transforms its input first."""
        return self._binding is not None

    @property
    def inputs(self) -> tuple[TensorInfo, ...]:
        """The model's inputs."""
        return tuple(TensorInfo(i.name, i.type, tuple(i.shape)) for i in self.session.get_inputs())

    @property
    def outputs(self) -> tuple[TensorInfo, ...]:
        """The model's outputs."""
        return tuple(TensorInfo(o.name, o.type, tuple(o.shape)) for o in self.session.get_outputs())

    def feeds(
        self, data: npt.ArrayLike | Mapping[str, npt.ArrayLike]
    ) -> dict[str, npt.NDArray[Any]]:
        """Shape raw input into the session's feeds.

        A single array goes to the only input; a mapping names the inputs. Values are
        converted to each input's element type when that loses nothing a model cares
        about (numbers to numbers); anything else is refused. A bound model's input
        goes through its transform ``x' = A x`` first (float64 maths).

        Raises:
            InputError: Unknown or missing input names, or values of the wrong kind.
        """
        inputs = self.inputs
        if isinstance(data, Mapping):
            given: Mapping[str, npt.ArrayLike] = data
        elif len(inputs) == 1:
            given = {inputs[0].name: data}
        else:
            names = ", ".join(i.name for i in inputs)
            raise InputError(f"the model has several inputs ({names}); name each one")
        known = {i.name: i for i in inputs}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise InputError(f"the model has no input {unknown[0]!r}")
        missing = sorted(set(known) - set(given))
        if missing:
            raise InputError(f"input {missing[0]!r} is missing")
        feeds: dict[str, npt.NDArray[Any]] = {}
        for name, value in given.items():
            dtype = _DTYPES.get(known[name].type)
            if dtype is None:
                raise InputError(f"input {name!r} has type {known[name].type}, not supported here")
            array = np.asarray(value)
            if array.dtype.kind not in "biuf":
                raise InputError(f"input {name!r} must be numeric, got {array.dtype}")
            if self._binding is not None and name == self._binding.input_name:
                try:
                    array = apply_transform(array, self._binding)
                except UsageError as exc:
                    raise InputError(f"input {name!r}: {exc.message}") from None
            feeds[name] = array.astype(dtype, copy=False)
        return feeds

    def run(self, data: npt.ArrayLike | Mapping[str, npt.ArrayLike]) -> dict[str, npt.NDArray[Any]]:
        """Run the model; returns every output by name.

        Raises:
            InputError: The input does not fit the model (see :meth:`feeds`), or the
                runtime refused it (shape, rank).
        """
        feeds = self.feeds(data)
        names = [o.name for o in self.outputs]
        try:
            values = self.session.run(names, feeds)
        except _ORT_ERRORS as exc:
            raise InputError(f"the model refused the input: {_ort_message(exc)}") from None
        return {name: np.asarray(value) for name, value in zip(names, values, strict=True)}


def _ort_message(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _new_session(model: bytes, options: Any | None, providers: Sequence[str] | None) -> Any:
    try:
        return onnxruntime.InferenceSession(
            model,
            sess_options=options,
            providers=list(providers or ["CPUExecutionProvider"]),
            # No re-creation on a provider failure: the model bytes are wiped next.
            enable_fallback=0,
        )
    except _ORT_ERRORS as exc:
        raise ModelUnsupportedError(
            f"ONNX Runtime could not load the model: {_ort_message(exc)}"
        ) from None


def _session_from_model(
    model: memoryview,
    options: Any | None,
    providers: Sequence[str] | None,
    split_min_bytes: int,
    whole: bytes | None = None,
) -> Any:
    """A session for the ONNX model in ``model``; large weights are read from ``model`` in place.

    ``whole``, when given, is a ``bytes`` object holding exactly ``model`` (a
    :class:`WipeableBytes` value), handed to the runtime without another copy. The
    caller wipes ``model`` afterwards and must keep its memory allocated while the
    session lives (see :mod:`modelseal.client.onnx_split`).
    """
    split = split_initializers(model) if len(model) >= split_min_bytes else None
    if split is None and whole is not None:
        return _new_session(whole, options, providers)
    if split is None:
        with WipeableBytes(len(model)) as copy:
            copy.view[:] = model
            return _new_session(copy.value, options, providers)
    if options is None:
        options = onnxruntime.SessionOptions()
    names, values = [], []
    for item in split.initializers:
        width = ELEMENT_BYTES[item.element_type]
        view = np.frombuffer(
            model, dtype=_UNSIGNED[width], count=item.length // width, offset=item.offset
        ).reshape(item.dims)
        names.append(item.name)
        values.append(
            onnxruntime.OrtValue.ortvalue_from_numpy_with_onnx_type(view, item.element_type)
        )
    try:
        options.add_external_initializers(names, values)
        with WipeableBytes(len(split.graph)) as graph:
            graph.view[:] = split.graph
            wipe(split.graph)
            return _new_session(graph.value, options, providers)
    except _ORT_ERRORS as exc:
        raise ModelUnsupportedError(
            f"ONNX Runtime could not load the model: {_ort_message(exc)}"
        ) from None


def _bundle_entry(plaintext: memoryview) -> tuple[Manifest, memoryview]:
    """Parse a bundle in memory; return its manifest and a view of the verified ONNX entry.

    The manifest and layout are checked by :class:`BundleReader`; the entry's padding
    and SHA-256 are checked here, on a view, so that no unwipeable copy of the
    model is ever made.
    """
    # The reader only reads the prefix and the manifest (small); the model is read below.
    reader = BundleReader(lambda start, stop: bytes(plaintext[start:stop]), len(plaintext))
    manifest = reader.manifest
    if manifest.fields.format is not ModelFormat.ONNX:
        raise ModelUnsupportedError(
            f"the bundle's model is {manifest.fields.format.value}, not onnx"
        )
    entry = manifest.entry
    (manifest_len,) = struct.unpack_from(">I", plaintext, len(MAGIC))
    manifest_end = len(MAGIC) + 4 + manifest_len
    if any(plaintext[manifest_end : entry.offset]):
        raise BundleError(f"padding before {entry.name!r} at offset {manifest_end} is not zero")
    content = plaintext[entry.offset : entry.end]
    if not hmac.compare_digest(hashlib.sha256(content).hexdigest(), entry.sha256):
        raise BundleError(f"file {entry.name!r} at offset {entry.offset} does not match its sha256")
    return manifest, content


def session_from_plaintext(
    plaintext: memoryview,
    ctype: str,
    *,
    options: Any | None = None,
    providers: Sequence[str] | None = None,
    split_min_bytes: int = SPLIT_MIN_MODEL_BYTES,
) -> tuple[Any, Manifest | None]:
    """Build an InferenceSession from a plaintext held in memory (see module docstring).

    The caller keeps ``plaintext`` (a writable buffer), wipes it once this returns,
    and keeps it allocated while the session lives. Copies made here are wiped here.
    Models of at least ``split_min_bytes`` hand their large weights to ONNX Runtime
    as external initializers (:mod:`~modelseal.client.onnx_split`); smaller ones are
    handed over whole, which is faster for them.

    Raises:
        ModelUnsupportedError: The content type, bundle format or model is not loadable.
        BundleError: The bundle is malformed.
    """
    manifest: Manifest | None = None
    if ctype == BUNDLE_MEDIA_TYPE:
        manifest, model = _bundle_entry(plaintext)
    elif ctype in ONNX_MEDIA_TYPES:
        model = plaintext
    else:
        raise ModelUnsupportedError(f"content type {ctype!r} cannot be loaded into ONNX Runtime")
    return _session_from_model(model, options, providers, split_min_bytes), manifest


def load_at_rest(
    path: str | os.PathLike[str],
    kek: KEKWrapper,
    *,
    now: int | None = None,
    model_id: str | None = None,
    options: Any | None = None,
    providers: Sequence[str] | None = None,
) -> LoadedModel:
    """Open an at-rest package and load its model into ONNX Runtime, in memory.

    Args:
        path: The at-rest package (rtype ``kek``).
        kek: The device KEK it is wrapped under.
        now: Unix time to judge the licence against (default: the system clock).
        model_id: When given, the package's ``mid`` claim must be this (file names are
            not authenticated; the claims are).
        options: ``onnxruntime.SessionOptions``.
        providers: Execution providers (default CPU).

    Raises:
        LicenceExpiredError: The licence (``lexp``) has ended: fetch the model again.
        PackageMismatchError: The package holds another model than ``model_id``.
        ModelUnsupportedError: The content cannot be loaded into ONNX Runtime.
        ModelSealError: Any envelope error (wrong KEK, altered file, ...).
    """
    policy = OpenPolicy(now=now)
    with open(path, "rb", buffering=0) as src:
        # The header first: authenticated (KEK unwrap) and the licence judged, before
        # anything is decrypted.
        package = open_stream(src, kek, policy)
        header = package.header
        if model_id is not None and (header.claims is None or header.claims.mid != model_id):
            raise PackageMismatchError(f"the file stored as {model_id!r} holds another model")
        if header.ctype not in LOADABLE_MEDIA_TYPES:
            raise ModelUnsupportedError(
                f"content type {header.ctype!r} cannot be loaded into ONNX Runtime"
            )
        if header.ctype == BUNDLE_MEDIA_TYPE:
            # A sealed-weights bundle is decrypted tensor by tensor, never whole
            # (modelseal.client.sealed_weights).
            from modelseal.client.sealed_weights import load_sealed_weights, read_manifest
            from modelseal.models.sealed_weights import is_sealed_weights

            bundle_manifest = read_manifest(package)
            if is_sealed_weights(bundle_manifest):
                loaded = load_sealed_weights(
                    package, manifest=bundle_manifest, options=options, providers=providers
                )
                return LoadedModel(header, loaded.manifest, loaded.session, _pinned=loaded.keep)
        # Then the body, from the page cache (a read-only map of the ciphertext) straight
        # into an uninitialised buffer: no intermediate copy, no pass to zero it first.
        plaintext = WipeableBytes(header.length)
        try:
            with mmap.mmap(src.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                ciphertext = memoryview(mapped)
                try:
                    # One thread: on the 2-vCPU reference machine a second one did not
                    # make the decryption of 100 MB faster (docs/PERFORMANCE.md).
                    open_into(ciphertext, plaintext.view, kek, policy)
                finally:
                    ciphertext.release()
            if header.ctype in ONNX_MEDIA_TYPES and plaintext.wipeable:
                # The decrypted bytes are the model: no copy for small ones.
                manifest = None
                session = _session_from_model(
                    plaintext.view, options, providers, SPLIT_MIN_MODEL_BYTES, plaintext.value
                )
            else:
                session, manifest = session_from_plaintext(
                    plaintext.view, header.ctype, options=options, providers=providers
                )
        finally:
            plaintext.wipe()
    return LoadedModel(header, manifest, session, plaintext)
