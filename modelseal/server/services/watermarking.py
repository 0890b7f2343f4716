"""Watermark and bind each issuance before it is sealed; trace a leaked model back to it.

At issuance (:meth:`WatermarkingService.prepare`), for a model whose policy enables it:

1. the entry model's float weights get the issuance's keyed mark
   (:mod:`modelseal.models.watermark`), keyed by
   ``HKDF(watermark secret, "modelseal/1 watermark" || jti)``;
2. then its first layer is bound to the device (:mod:`modelseal.models.binding`): the
   device's binding secret is ``HKDF(binding secret, "modelseal/1 device binding" ||
   device id)``, the issuance's seed is derived from it and the ``jti``, and the seed
   travels in the bundle manifest's ``binding`` object, inside the container sealed to
   that device, so that the SDK can apply the transform on every inference.

Only a :class:`~modelseal.server.db.watermark_models.WatermarkRecord` is stored: who,
which device, when, and the detection parameters. No key, no pattern, no model.

Tracing (:meth:`WatermarkingService.trace`) re-derives every candidate key of the
model from the secret and the stored ``jti`` and scores all of them against the
suspect at once (one AES-CTR call per key, then matrix products). When no candidate
stands out and some issuances were bound, the suspect may be a bound model dumped
from a device: each bound candidate is then scored again after undoing its own
transform. Each score is a test; the family-wise p-value counts all of them.
"""

from __future__ import annotations

import dataclasses
import secrets
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol

import numpy as np
import numpy.typing as npt
import structlog
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelseal.errors import KeyFormatError, UsageError
from modelseal.keys.jwk import write_private_file
from modelseal.models import binding as binding_lib
from modelseal.models import watermark as wm
from modelseal.models.bundle import BUNDLE_MEDIA_TYPE, MAGIC, build_bundle, parse_bundle
from modelseal.models.errors import ModelFormatError
from modelseal.models.manifest import ModelFormat
from modelseal.server.db.models import User
from modelseal.server.db.session import SessionFactory
from modelseal.server.db.watermark_models import WatermarkRecord
from modelseal.server.errors import ConfigurationError
from modelseal.server.settings import ModelSpec, Settings, decode_secret_key

__all__ = [
    "DEVICE_BINDING_INFO_LABEL",
    "ONNX_MEDIA_TYPES",
    "SAFETENSORS_MEDIA_TYPE",
    "SCHEME",
    "TraceMatch",
    "TraceReport",
    "WatermarkingService",
    "device_binding_secret",
    "load_model_weights",
    "load_server_secret",
]

SCHEME = "spread-spectrum-v1"
"""The ``scheme`` of every record: :mod:`modelseal.models.watermark` as specified today."""

DEVICE_BINDING_INFO_LABEL = b"modelseal/1 device binding"
"""HKDF ``info`` prefix of a device's binding secret; the device id (UTF-8) follows it."""

ONNX_MEDIA_TYPES = frozenset({"application/onnx", "application/vnd.onnx"})
SAFETENSORS_MEDIA_TYPE = "application/vnd.modelseal.safetensors"
SECRETS_DIR_NAME = "secrets"
_SECRET_FILES = {"watermark_secret": "watermark.key", "binding_secret": "binding.key"}
BLIND, ALIGNED, UNBOUND = "blind", "aligned", "unbound"
CONFIRM_CANDIDATES = 16
"""Bound candidates re-scored with their own transform undone, after the aligned pass."""

_log = structlog.get_logger("modelseal.server.watermarking")


class _TensorFile(Protocol):
    def read(self, name: str) -> npt.NDArray[np.generic]: ...

    def replace(self, name: str, array: npt.ArrayLike) -> None: ...

    def to_bytes(self) -> bytes: ...

    def external_files(self) -> Mapping[str, bytes]: ...


class _SafetensorsModel:
    """A safetensors file behind the same interface as an ONNX model (no external files)."""

    def __init__(self, data: bytes) -> None:
        from modelseal.models.safetensors_adapter import SafetensorsFile

        self._file = SafetensorsFile(data)

    def read(self, name: str) -> npt.NDArray[np.generic]:
        return self._file.read(name)

    def replace(self, name: str, array: npt.ArrayLike) -> None:
        self._file.replace(name, array)

    def to_bytes(self) -> bytes:
        return self._file.to_bytes()

    def external_files(self) -> Mapping[str, bytes]:
        return {}


def _tensor_file(
    data: bytes, model_format: ModelFormat, external: Mapping[str, bytes] | None = None
) -> _TensorFile:
    """The model file ``data``; an ONNX model's weights may live in ``external`` files
    (the other files of its bundle, as in a sealed-weights bundle)."""
    if model_format is ModelFormat.SAFETENSORS:
        return _SafetensorsModel(data)
    from modelseal.models.onnx_adapter import ONNXModel

    return ONNXModel(data, external_data=external)


def load_server_secret(settings: Settings, name: str, *, create: bool = True) -> bytes:
    """The server secret ``name`` (``watermark_secret`` or ``binding_secret``).

    Taken from the settings when set. Otherwise, in dev mode only, read from (or, with
    ``create``, created in) ``<data_dir>/secrets/<watermark|binding>.key``, mode 0600, so
    that a dev server traces its own issuances across restarts.

    Raises:
        ConfigurationError: Production mode without the secret, no stored secret and
            ``create`` is false, or a stored secret that is unreadable or weak.
    """
    value = getattr(settings, name)
    if value is not None:
        return decode_secret_key(value.get_secret_value(), name)
    if settings.mode != "dev":
        raise ConfigurationError(f"{name} is required (>= 32 random bytes, base64url)")
    directory = settings.data_dir / SECRETS_DIR_NAME
    if not create:
        path = directory / _SECRET_FILES[name]
        if not path.is_file():
            raise ConfigurationError(f"{name} is not set and {path} does not exist")
        return _read_secret_file(path, name)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / _SECRET_FILES[name]
    if not path.exists():
        # A complete file is linked into place, so that processes starting together
        # never read one that another has created but not yet written.
        try:
            write_private_file(path, (secrets.token_urlsafe(32) + "\n").encode(), overwrite=False)
        except KeyFormatError:
            pass  # another process was first: use its secret
        else:
            _log.warning(
                "server_secret_generated", secret=name, detail="dev mode: kept under data_dir"
            )
    return _read_secret_file(path, name)


def _read_secret_file(path: Path, name: str) -> bytes:
    if path.stat().st_mode & 0o077:
        raise ConfigurationError(f"{path} must not be readable by group or others (chmod 600)")
    try:
        return decode_secret_key(path.read_text(encoding="ascii").strip(), name)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from None


def device_binding_secret(binding_secret: bytes, device_id: str) -> bytes:
    """``HKDF-SHA256(binding secret, info = DEVICE_BINDING_INFO_LABEL || device id)``, 32 bytes."""
    info = DEVICE_BINDING_INFO_LABEL + device_id.encode("utf-8")
    return HKDF(hashes.SHA256(), 32, None, info).derive(binding_secret)


def _spec_of(policy_tensors: Sequence[str], strength: float, density: int) -> wm.WatermarkSpec:
    return wm.WatermarkSpec(tensors=tuple(policy_tensors), strength=strength, density=density)


def _looks_like_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    (header_len,) = struct.unpack_from("<Q", data)
    return 2 <= header_len <= len(data) - 8 and data[8:9] == b"{"


def load_model_weights(
    data: bytes, names: Sequence[str]
) -> tuple[dict[str, npt.NDArray[np.generic]], str | None]:
    """Read tensors ``names`` from a bundle, an ONNX file or a safetensors file.

    Returns:
        The tensors, and the bundle's model id (None for a bare model file).

    Raises:
        UsageError: A tensor is missing.
        BundleError: A bundle that does not parse.
        ModelFormatError: Not a model file this can read.
    """
    model_id: str | None = None
    model_format = ModelFormat.ONNX
    external: dict[str, bytes] = {}
    if data.startswith(MAGIC):
        bundle = parse_bundle(data)
        model_id = bundle.manifest.fields.model_id
        model_format = bundle.manifest.fields.format
        entry_name = bundle.manifest.entry.name
        external = {name: body for name, body in bundle.files.items() if name != entry_name}
        data = bundle.entry
    elif _looks_like_safetensors(data):
        model_format = ModelFormat.SAFETENSORS
    model = _tensor_file(data, model_format, external)
    return {name: model.read(name) for name in names}, model_id


@dataclass(frozen=True, slots=True)
class TraceMatch:
    """One candidate issuance's score.

    Attributes:
        jti: The issuance.
        user_subject: The user it was issued to (pseudonymous subject).
        user_name: The account name, when the account still exists and has one.
        device_id: The device it was issued to.
        issued_at: Unix time of the issuance.
        z: The score; about ``N(0, 1)`` for an issuance that did not mark the suspect.
        p_value: ``P(Z >= z)`` for one wrong candidate.
        family_p_value: ``min(1, scores * p_value)``: the chance that any wrong candidate
            of this trace scores this high.
        method: How the suspect was read for this score: ``blind`` (as it is),
            ``aligned`` (bound layer aligned to the base) or ``unbound`` (this
            issuance's own binding undone).
    """

    jti: str
    user_subject: str
    user_name: str | None
    device_id: str
    issued_at: int
    z: float
    p_value: float
    family_p_value: float
    method: str

    @property
    def significant(self) -> bool:
        """``family_p_value`` below :data:`~modelseal.models.watermark.DETECTION_P_VALUE`."""
        return self.family_p_value < wm.DETECTION_P_VALUE


@dataclass(frozen=True, slots=True)
class TraceReport:
    """The outcome of one trace.

    Attributes:
        model_id: The model whose issuances were scanned.
        candidates: Issuances scanned.
        scores: Tests the family-wise p-values count: every candidate once, and every
            bound candidate twice more (aligned, and unbound) when bound issuances exist
            (:meth:`WatermarkingService.trace`).
        matches: The best candidates, by decreasing ``z``.
    """

    model_id: str
    candidates: int
    scores: int
    matches: tuple[TraceMatch, ...]

    @property
    def best(self) -> TraceMatch | None:
        """The highest-scoring candidate, if any was scanned."""
        return self.matches[0] if self.matches else None

    @property
    def found(self) -> bool:
        """Whether the best candidate is significant after counting every score."""
        return self.best is not None and self.best.significant


@dataclass(frozen=True, slots=True)
class _Candidate:
    jti: str
    user_subject: str
    device_id: str
    issued_at: int
    tensors: tuple[str, ...]
    density: int
    binding_layer: str | None


class WatermarkingService:
    """Marks and binds issuances as their model's policy says; traces suspects.

    Args:
        sessions: Database sessions (trace reads the records).
        settings: Server settings (model policies, secrets, data directory).
        create_secrets: In dev mode, create missing secrets (the server) or refuse
            (``modelseal trace``, which writes nothing).

    Raises:
        ConfigurationError: A model enables watermarking or binding and its secret is
            missing (production) or unusable.
    """

    def __init__(
        self, sessions: SessionFactory, settings: Settings, *, create_secrets: bool = True
    ) -> None:
        """Wire the service; a dev server's missing secrets are created unless told not to."""
        self._sessions = sessions
        self._settings = settings
        self._create_secrets = create_secrets
        self._secrets: dict[str, bytes] = {}
        # Fail at start, not in the first job, when a needed secret is missing or weak.
        if any(spec.watermark.enabled for spec in settings.models):
            self._secret("watermark_secret")
        if any(spec.binding.enabled for spec in settings.models):
            self._secret("binding_secret")

    def _secret(self, name: str) -> bytes:
        secret = self._secrets.get(name)
        if secret is None:
            secret = load_server_secret(self._settings, name, create=self._create_secrets)
            self._secrets[name] = secret
        return secret

    def __repr__(self) -> str:
        return "WatermarkingService()"

    def __reduce__(self) -> NoReturn:
        raise TypeError("the watermarking service holds secrets and cannot be pickled")

    # --- issuance -----------------------------------------------------------------------

    @staticmethod
    def applies(spec: ModelSpec) -> bool:
        """Whether issuances of ``spec`` are marked or bound."""
        return spec.watermark.enabled or spec.binding.enabled

    def prepare(
        self, plaintext: bytes | bytearray, ctype: str, spec: ModelSpec, *, jti: str, device_id: str
    ) -> bytearray:
        """The issuance's plaintext with its mark embedded and its binding folded in.

        The caller wipes ``plaintext`` and, after sealing, the result. Copies made
        here by the model adapters are ``bytes`` and cannot be wiped; they are dropped
        before this returns.

        Raises:
            ConfigurationError: The model cannot carry the policy: a missing or non-float
                tensor, binding of a model that is not a bundle, an unknown media type.
            BundleError: The generator returned a malformed bundle.
            ModelFormatError: The generator returned a malformed model.
        """
        try:
            if ctype == BUNDLE_MEDIA_TYPE:
                return self._prepare_bundle(plaintext, spec, jti=jti, device_id=device_id)
            if spec.binding.enabled:
                raise UsageError("binding needs a bundle (the manifest carries its parameters)")
            if ctype in ONNX_MEDIA_TYPES:
                model_format = ModelFormat.ONNX
            elif ctype == SAFETENSORS_MEDIA_TYPE:
                model_format = ModelFormat.SAFETENSORS
            else:
                raise UsageError(f"content type {ctype!r} carries no model this can mark")
            model = _tensor_file(bytes(plaintext), model_format)
            self._mark(model, spec, jti)
            return bytearray(model.to_bytes())
        except UsageError as exc:
            raise ConfigurationError(f"model {spec.id!r}: {exc.message}") from None

    def _prepare_bundle(
        self, plaintext: bytes | bytearray, spec: ModelSpec, *, jti: str, device_id: str
    ) -> bytearray:
        bundle = parse_bundle(plaintext)
        fields = bundle.manifest.fields
        entry_name = bundle.manifest.entry.name
        others = {name: data for name, data in bundle.files.items() if name != entry_name}
        model = _tensor_file(bundle.entry, fields.format, others)
        self._mark(model, spec, jti)
        if spec.binding.enabled:
            if fields.binding is not None:
                raise UsageError("the generator's bundle is already bound")
            layer = model.read(spec.binding.layer)
            if layer.ndim != 2:
                raise UsageError(f"binding layer {spec.binding.layer!r} must be [out, in]")
            seed = binding_lib.derive_seed(
                device_binding_secret(self._secret("binding_secret"), device_id), jti
            )
            transform = binding_lib.transform_from_seed(
                seed, jti, dim=int(layer.shape[1]), input_name=spec.binding.input
            )
            bound = binding_lib.bind_weights(
                {spec.binding.layer: layer}, transform, layer=spec.binding.layer
            )
            model.replace(spec.binding.layer, bound[spec.binding.layer])
            fields = dataclasses.replace(
                fields, binding=binding_lib.binding_manifest(transform, seed=seed)
            )
        # Tensors stored outside the entry (a sealed-weights bundle) are rewritten in place.
        updated = {entry_name: model.to_bytes(), **model.external_files()}
        files = [
            (entry.name, updated.get(entry.name, bundle.files[entry.name]))
            for entry in bundle.manifest.files
        ]
        return build_bundle(fields, files)

    def _mark(self, model: _TensorFile, spec: ModelSpec, jti: str) -> None:
        if not spec.watermark.enabled:
            return
        policy = spec.watermark
        wm_spec = _spec_of(policy.tensors, policy.strength, policy.density)
        weights = {name: model.read(name) for name in wm_spec.tensors}
        key = wm.WatermarkKey.derive(self._secret("watermark_secret"), jti)
        marked = wm.embed(weights, key, wm_spec)
        for name in wm_spec.tensors:
            model.replace(name, marked[name])

    def record(
        self,
        session: Session,
        spec: ModelSpec,
        *,
        jti: str,
        user_subject: str,
        device_id: str,
        issued_at: int,
    ) -> None:
        """Store what tracing needs for a marked issuance (inside the issuance's transaction).

        Nothing is stored for a model without a watermark.
        """
        if not spec.watermark.enabled:
            return
        bound = spec.binding.enabled
        session.add(
            WatermarkRecord(
                jti=jti,
                model_id=spec.id,
                user_subject=user_subject,
                device_id=device_id,
                issued_at=issued_at,
                scheme=SCHEME,
                tensors=list(spec.watermark.tensors),
                strength=spec.watermark.strength,
                density=spec.watermark.density,
                binding=binding_lib.BINDING_TYPE if bound else None,
                binding_layer=spec.binding.layer if bound else None,
            )
        )

    # --- tracing ------------------------------------------------------------------------

    def _candidates(self, model_id: str) -> Iterator[_Candidate]:
        with self._sessions() as session:
            rows = session.execute(
                select(
                    WatermarkRecord.jti,
                    WatermarkRecord.user_subject,
                    WatermarkRecord.device_id,
                    WatermarkRecord.issued_at,
                    WatermarkRecord.tensors,
                    WatermarkRecord.density,
                    WatermarkRecord.binding_layer,
                    WatermarkRecord.scheme,
                ).where(WatermarkRecord.model_id == model_id)
            )
            for jti, subject, device_id, issued_at, tensors, density, layer, scheme in rows:
                if scheme != SCHEME:
                    raise ConfigurationError(f"issuance {jti!r} uses unknown scheme {scheme!r}")
                yield _Candidate(jti, subject, device_id, issued_at, tuple(tensors), density, layer)

    def _names(self, subjects: set[str]) -> dict[str, str | None]:
        if not subjects:
            return {}
        with self._sessions() as session:
            rows = session.execute(
                select(User.subject, User.name).where(User.subject.in_(sorted(subjects)))
            )
            return {row.subject: row.name for row in rows}

    def trace(
        self,
        suspect: bytes,
        base: bytes,
        model_id: str,
        *,
        top: int = 10,
    ) -> TraceReport:
        """Score every recorded issuance of ``model_id`` against a suspect model.

        Three passes, each a set of tests counted in the family-wise p-value:

        1. *blind*: every candidate against the suspect's weights as they are;
        2. *aligned*, when issuances were bound: every bound candidate against the
           suspect after its bound layer is mapped onto the base's by the orthogonal
           matrix that fits best (Procrustes). The map depends on the suspect and the
           base only, never on a key, so wrong candidates still score ``N(0, 1)``;
           it undoes most of any input rotation, the device's binding included;
        3. *unbound*: the :data:`CONFIRM_CANDIDATES` best bound candidates of pass 2,
           each after undoing its own transform exactly.

        Passes 2 and 3 run only when pass 1 finds nothing; their tests are counted
        whenever bound issuances exist, whether they ran or not. Pass 3 counts as one
        test per *bound* candidate, not per confirmation: its shortlist is chosen by
        pass-2 scores under the same keys, so which wrong candidates reach it depends on
        their keys; the union over every candidate that could have reached it bounds the
        chance that a wrong one scores high there, the count of 16 does not.

        Args:
            suspect: The suspect: a bundle, an ONNX file or a safetensors file.
            base: The base model the issued copies were personalised from (same formats).
            model_id: The model whose issuances are candidates.
            top: How many of the best candidates to report.

        Raises:
            UsageError: A tensor is missing or of another shape in the suspect or base.
            BundleError: A bundle that does not parse.
            ModelFormatError: A file that is not a model this can read.
        """
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise UsageError(f"top must be a positive integer, got {top!r}")
        candidates = list(self._candidates(model_id))
        if not candidates:
            return TraceReport(model_id, 0, 0, ())
        bound = [c for c in candidates if c.binding_layer is not None]
        confirm = min(CONFIRM_CANDIDATES, len(bound))
        tests = len(candidates) + 2 * len(bound)
        layers = sorted({c.binding_layer for c in bound if c.binding_layer is not None})
        needed = sorted({name for c in candidates for name in c.tensors} | set(layers))
        suspect_w, _ = _read_for_trace(suspect, needed, "suspect")
        base_w, _ = _read_for_trace(base, needed, "base model")
        keys: dict[str, wm.WatermarkKey] = {}
        scored = [(z, BLIND, c) for z, c in self._scores(suspect_w, base_w, candidates, keys)]
        if bound and _family_p(max(z for z, _, _ in scored), tests) >= wm.DETECTION_P_VALUE:
            aligned_w = _procrustes_aligned(suspect_w, base_w, layers)
            aligned = sorted(
                self._scores(aligned_w, base_w, bound, keys), key=lambda item: -item[0]
            )
            scored.extend((z, ALIGNED, c) for z, c in aligned)
            shortlist = [c for _, c in aligned[:confirm]]
            scored.extend(
                (z, UNBOUND, c) for z, c in self._unbound_scores(suspect_w, base_w, shortlist, keys)
            )
        scored.sort(key=lambda item: (-item[0], item[2].jti))
        best: list[tuple[float, str, _Candidate]] = []
        seen: set[str] = set()
        for item in scored:
            if item[2].jti not in seen:
                seen.add(item[2].jti)
                best.append(item)
            if len(best) == top:
                break
        names = self._names({c.user_subject for _, _, c in best})
        matches = tuple(
            TraceMatch(
                jti=c.jti,
                user_subject=c.user_subject,
                user_name=names.get(c.user_subject),
                device_id=c.device_id,
                issued_at=c.issued_at,
                z=z,
                p_value=wm.p_value(z),
                family_p_value=_family_p(z, tests),
                method=method,
            )
            for z, method, c in best
        )
        return TraceReport(model_id, len(candidates), tests, matches)

    def _scores(
        self,
        suspect: Mapping[str, npt.NDArray[np.generic]],
        base: Mapping[str, npt.NDArray[np.generic]],
        candidates: Sequence[_Candidate],
        keys: dict[str, wm.WatermarkKey],
    ) -> list[tuple[float, _Candidate]]:
        """Every candidate's z, grouped by detection parameters (one batched scan each).

        ``keys`` caches the derived keys by ``jti`` across the passes of one trace.
        """
        secret = self._secret("watermark_secret")

        def key(jti: str) -> wm.WatermarkKey:
            found = keys.get(jti)
            if found is None:
                found = keys[jti] = wm.WatermarkKey.derive(secret, jti)
            return found

        groups: dict[tuple[tuple[str, ...], int], list[_Candidate]] = {}
        for candidate in candidates:
            groups.setdefault((candidate.tensors, candidate.density), []).append(candidate)
        out: list[tuple[float, _Candidate]] = []
        for (tensors, density), group in groups.items():
            spec = _spec_of(tensors, 0.5, density)  # the strength does not enter detection
            by_jti = {c.jti: c for c in group}
            group_keys = (key(c.jti) for c in group)
            out.extend((m.z, by_jti[m.jti]) for m in wm.detect(suspect, base, group_keys, spec))
        return out

    def _unbound_scores(
        self,
        suspect: Mapping[str, npt.NDArray[np.generic]],
        base: Mapping[str, npt.NDArray[np.generic]],
        candidates: Sequence[_Candidate],
        keys: dict[str, wm.WatermarkKey],
    ) -> list[tuple[float, _Candidate]]:
        """Score each bound candidate after undoing its own transform on the suspect."""
        binding_secret = self._secret("binding_secret")
        out: list[tuple[float, _Candidate]] = []
        for candidate in candidates:
            layer = candidate.binding_layer
            assert layer is not None  # the caller passes bound candidates only
            weight = suspect[layer]
            device_secret = device_binding_secret(binding_secret, candidate.device_id)
            seed = binding_lib.derive_seed(device_secret, candidate.jti)
            transform = binding_lib.transform_from_seed(
                seed, candidate.jti, dim=int(weight.shape[1])
            )
            unbound = binding_lib.unbind_weights(suspect, transform, layer=layer)
            out.extend(self._scores(unbound, base, [candidate], keys))
        return out


def _procrustes_aligned(
    suspect: Mapping[str, npt.NDArray[np.generic]],
    base: Mapping[str, npt.NDArray[np.generic]],
    layers: Sequence[str],
) -> dict[str, npt.NDArray[np.generic]]:
    """``suspect`` with each of ``layers`` (``W'``, ``[out, in]``) replaced by ``W' R``.

    ``R`` is the orthogonal matrix minimising ``||W' R - B||`` for the base's layer
    ``B``: ``R = U V^T`` where ``W'^T B = U S V^T``. It uses no key.

    Raises:
        UsageError: A layer is not two-dimensional or its shape differs from the base's.
    """
    out = dict(suspect)
    for layer in layers:
        w, b = suspect[layer], base[layer]
        if w.ndim != 2 or w.shape != b.shape:
            raise UsageError(
                f"suspect tensor {layer!r} must be [out, in] like the base's {b.shape}, "
                f"got {w.shape}"
            )
        w64, b64 = w.astype(np.float64), b.astype(np.float64)
        if not (np.all(np.isfinite(w64)) and np.all(np.isfinite(b64))):
            raise UsageError(f"tensor {layer!r} holds NaN or infinite values")
        u, _, vt = np.linalg.svd(w64.T @ b64)
        out[layer] = (w64 @ (u @ vt)).astype(w.dtype)
    return out


def _family_p(z: float, tests: int) -> float:
    return min(1.0, tests * wm.p_value(z))


def _read_for_trace(
    data: bytes, names: Sequence[str], what: str
) -> tuple[dict[str, npt.NDArray[np.generic]], str | None]:
    try:
        return load_model_weights(data, names)
    except ModelFormatError as exc:
        raise ModelFormatError(f"{what}: {exc.message}") from None
    except UsageError as exc:
        raise UsageError(f"{what}: {exc.message}") from None
