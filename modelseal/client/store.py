"""The device's local package store: at-rest models, and downloads in progress.

At-rest models are FORMAT v1 packages of rtype ``kek`` (``models/<mid>.mseal``),
written atomically (0600 temp file, fsync, rename), one per model id; fetching a
model again replaces its copy in one step. Their headers are readable without a
key, but everything this module reports about a model comes from a header the KEK
has authenticated (the KEK wrap's AAD binds the header hash).

A download in progress is two files in ``downloads/``: ``<mid>.part``, the
issued package's ciphertext as received so far (appended to, 0600), and
``<mid>.json``, what the client needs to resume it (job id, jti, expected size).
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from modelseal.client.datadir import (
    DataDir,
    check_model_id,
    read_json_object,
    write_json_object,
    write_private_bytes,
)
from modelseal.client.errors import ClientStateError, ModelNotStoredError
from modelseal.envelope import Claims, Header, OpenPolicy, RType, open_stream
from modelseal.errors import UsageError
from modelseal.keys import KEKWrapper

__all__ = ["ISSUER_KID_CLAIM", "ModelStore", "PendingDownload", "StoredModel"]

_PACKAGE_SUFFIX = ".mseal"
# The at-rest copy records which issuer key signed the package, as an extra claim
# the KEK authenticates with the rest of the header, so that a stored model can be
# refused once that key is revoked (DeviceClient.load; docs/CLIENT.md §3.3).
ISSUER_KID_CLAIM = "ikid"


@dataclass(frozen=True, slots=True)
class StoredModel:
    """One at-rest model, as listed.

    Attributes:
        model_id: The model id (file name and ``mid`` claim).
        path: The at-rest package.
        size_bytes: Its size on disk.
        header: Its header, authenticated by the KEK.
    """

    model_id: str
    path: Path
    size_bytes: int
    header: Header

    @property
    def claims(self) -> Claims | None:
        """The issued claims the at-rest copy kept (without the device's ``ikid`` record)."""
        claims = self.header.claims
        if claims is None or ISSUER_KID_CLAIM not in claims.extra:
            return claims
        extra = {k: v for k, v in claims.extra.items() if k != ISSUER_KID_CLAIM}
        return replace(claims, extra=extra)

    @property
    def issuer_kid(self) -> str | None:
        """The kid of the issuer key that signed the package (None for older copies)."""
        claims = self.header.claims
        kid = claims.extra.get(ISSUER_KID_CLAIM) if claims is not None else None
        return kid if isinstance(kid, str) else None

    @property
    def licence_expires_at(self) -> int | None:
        """``lexp``, or None when the licence does not expire."""
        return None if self.header.claims is None else self.header.claims.lexp


@dataclass(frozen=True, slots=True)
class PendingDownload:
    """Where a download stands, so that a restarted client can resume it.

    Attributes:
        model_id: The model being fetched.
        job_id: The server's job id.
        jti: The issuance id, once the job is ready.
        total_bytes: The package size, once a response has announced it.
        started_at: Unix time the fetch began.
    """

    model_id: str
    job_id: str
    started_at: int
    jti: str | None = None
    total_bytes: int | None = None

    def to_json(self) -> dict[str, object]:
        """The state file's document."""
        return {
            "v": 1,
            "model_id": self.model_id,
            "job_id": self.job_id,
            "jti": self.jti,
            "total_bytes": self.total_bytes,
            "started_at": self.started_at,
        }


def _pending_from_json(document: dict[str, object], model_id: str) -> PendingDownload:
    names = {"v", "model_id", "job_id", "jti", "total_bytes", "started_at"}
    if set(document) != names or document["v"] != 1 or document["model_id"] != model_id:
        raise ClientStateError(f"download state of {model_id!r} is malformed")
    job_id, jti = document["job_id"], document["jti"]
    total, started = document["total_bytes"], document["started_at"]
    if (
        not isinstance(job_id, str)
        or not (jti is None or isinstance(jti, str))
        or not (total is None or (type(total) is int and total >= 0))
        or type(started) is not int
    ):
        raise ClientStateError(f"download state of {model_id!r} is malformed")
    return PendingDownload(model_id, job_id, started, jti, total)


class ModelStore:
    """At-rest models and pending downloads in one data directory."""

    __slots__ = ("_dir",)

    def __init__(self, datadir: DataDir) -> None:
        """Use ``datadir`` (which must exist)."""
        self._dir = datadir

    # --- at-rest models -------------------------------------------------------------------

    def put(self, model_id: str, package: bytes | bytearray | memoryview) -> Path:
        """Store (or replace) the at-rest package of ``model_id`` atomically."""
        path = self._dir.model_path(model_id)
        write_private_bytes(path, package)
        return path

    def path(self, model_id: str) -> Path:
        """The at-rest package of ``model_id``.

        Raises:
            ModelNotStoredError: None is stored.
        """
        path = self._dir.model_path(model_id)
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise ModelNotStoredError(f"no model {model_id!r} on this device") from None
        if not stat.S_ISREG(st.st_mode):
            raise ClientStateError(f"{path} is not a regular file")
        return path

    def header(self, model_id: str, kek: KEKWrapper) -> Header:
        """The at-rest header of ``model_id``, authenticated by ``kek``.

        Only the header is authenticated here; the licence is judged on load.

        Raises:
            ModelNotStoredError: None is stored.
            ModelSealError: The file is not a package wrapped under ``kek``.
        """
        path = self.path(model_id)
        with open(path, "rb", buffering=0) as src:
            # now=0: the KEK unwrap authenticates the header, and the licence is not
            # judged here (a listing shows expired models too; loading refuses them).
            header = open_stream(src, kek, OpenPolicy(now=0)).header
        if header.rtype is not RType.KEK:
            raise ClientStateError(f"{path} is not an at-rest package")
        return header

    def model_ids(self) -> list[str]:
        """Ids of the stored models, sorted."""
        ids = []
        for entry in os.listdir(self._dir.models):
            if entry.endswith(_PACKAGE_SUFFIX) and not entry.startswith("."):
                model_id = entry[: -len(_PACKAGE_SUFFIX)]
                with contextlib.suppress(UsageError):
                    ids.append(check_model_id(model_id))
        return sorted(ids)

    def stored(self, kek: KEKWrapper) -> list[StoredModel]:
        """Every stored model with its authenticated header."""
        found = []
        for model_id in self.model_ids():
            header = self.header(model_id, kek)
            path = self.path(model_id)
            found.append(StoredModel(model_id, path, path.stat().st_size, header))
        return found

    def delete(self, model_id: str) -> None:
        """Delete the at-rest copy of ``model_id`` and any download of it in progress.

        Raises:
            ModelNotStoredError: Neither exists.
        """
        removed = self.discard_download(model_id)
        try:
            self._dir.model_path(model_id).unlink()
        except FileNotFoundError:
            if not removed:
                raise ModelNotStoredError(f"no model {model_id!r} on this device") from None

    def delete_all(self) -> list[str]:
        """Delete every at-rest model and download in progress; returns the model ids."""
        ids = set(self.model_ids())
        for entry in os.listdir(self._dir.downloads):
            stem, _, suffix = entry.rpartition(".")
            if suffix in ("part", "json") and not entry.startswith("."):
                ids.add(stem)
        for model_id in sorted(ids):
            with contextlib.suppress(ModelNotStoredError):
                self.delete(model_id)
        return sorted(ids)

    # --- downloads in progress ------------------------------------------------------------

    def pending(self, model_id: str) -> PendingDownload | None:
        """The saved state of a download of ``model_id``, if one is in progress."""
        document = read_json_object(self._dir.download_state_path(model_id))
        return None if document is None else _pending_from_json(document, model_id)

    def save_pending(self, state: PendingDownload) -> None:
        """Save the state of a download atomically."""
        write_json_object(self._dir.download_state_path(state.model_id), state.to_json())

    def partial_path(self, model_id: str) -> Path:
        """The ciphertext file of a download of ``model_id``."""
        return self._dir.partial_path(model_id)

    def partial_size(self, model_id: str) -> int:
        """How many bytes of the download have been received (0 if none)."""
        try:
            st = self._dir.partial_path(model_id).lstat()
        except FileNotFoundError:
            return 0
        if not stat.S_ISREG(st.st_mode):
            raise ClientStateError(f"{self._dir.partial_path(model_id)} is not a regular file")
        return st.st_size

    def discard_download(self, model_id: str) -> bool:
        """Delete a download's ciphertext and state; returns whether anything was there."""
        removed = False
        for path in (self._dir.partial_path(model_id), self._dir.download_state_path(model_id)):
            try:
                path.unlink()
                removed = True
            except FileNotFoundError:
                pass
        return removed
