"""Users' personalisation examples: validated, encrypted at rest, kept only as policy says.

A device uploads its own examples (``POST /v1/examples``): images of the reference
digits task, ``x`` as ``n x 64`` intensities in ``[0, 1]`` and ``y`` as ``n`` labels
``0..9``. Each upload becomes one row of ``user_examples`` whose ``ciphertext`` is::

    nonce (12 bytes) || AES-256-GCM(key, nonce, plaintext, aad)
    aad       = "modelseal/1 user-examples" || 0x00 || str(user_id) || 0x00 || record_id
    plaintext = u32be(n) || x as float32 little-endian (n * 64 * 4 bytes) || y as u8 (n)

The key is derived (HKDF-SHA256, info ``"modelseal/1 user-examples key"``) from
``examples.encryption_key`` in the settings or, when that is unset, from
``<keyring_dir>/examples.key`` (32 random bytes made on first use, mode 0600). The
associated data binds a row to its user and its record id, so a row moved to
another user, or ciphertext swapped between rows, fails to decrypt.

Rows expire ``examples.retention_seconds`` after upload and the sweeper deletes
them; a user can delete them at any time; ``modelseal admin users delete`` deletes
them with the rest of the user's access, and rows of a disabled user are never
read and are swept. The reference generator reads a user's live examples through
:meth:`ExamplesService.user_data` (the generator's ``user_data`` accessor).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from modelseal.errors import KeyFormatError
from modelseal.keys.jwk import write_private_file
from modelseal.server.clock import Clock
from modelseal.server.db.examples_models import UserExamples
from modelseal.server.db.models import ApiToken, Device, User
from modelseal.server.db.session import SessionFactory
from modelseal.server.errors import ConfigurationError, NotFoundError, ServerError
from modelseal.server.services.accounts import Principal
from modelseal.server.settings import ExamplesSettings, decode_secret_key

__all__ = [
    "EXAMPLE_FEATURES",
    "EXAMPLE_LABELS",
    "ExamplesInfo",
    "ExamplesInvalidError",
    "ExamplesKeyError",
    "ExamplesLimitError",
    "ExamplesService",
    "StoredExamples",
    "UserDeletion",
    "delete_expired_examples",
    "examples_key",
]

EXAMPLE_FEATURES = 64
"""Features per example: an 8x8 digit, row-major."""
EXAMPLE_LABELS = 10
"""Labels are 0..9."""
KEY_FILE_NAME = "examples.key"

_AAD_LABEL = b"modelseal/1 user-examples"
_KEY_INFO = b"modelseal/1 user-examples key"
_KEY_ID_LABEL = b"modelseal/1 user-examples key-id"
_NONCE_BYTES = 12
_COUNT = struct.Struct(">I")
_RECORD_ID_BYTES = 16

_log = structlog.get_logger("modelseal.server.examples")


class ExamplesInvalidError(ServerError):
    """The uploaded examples have the wrong shape, type or range (the message names the field)."""

    code = "examples_invalid"


class ExamplesLimitError(ServerError):
    """An upload holds too many examples, or would take the user past their limit."""

    code = "examples_limit_exceeded"


class ExamplesKeyError(ConfigurationError):
    """A stored row was sealed under another key than the server's current examples key."""

    code = "examples_key_mismatch"


@dataclass(frozen=True, slots=True)
class ExamplesInfo:
    """One stored upload, as shown to its user (never the examples themselves).

    Attributes:
        record_id: The upload's id.
        count: Examples in it.
        created_at: Upload time (Unix seconds).
        expires_at: When it is deleted (Unix seconds).
    """

    record_id: str
    count: int
    created_at: int
    expires_at: int


@dataclass(frozen=True, slots=True)
class StoredExamples:
    """A user's live examples, decrypted for one generation.

    Attributes:
        x: ``[n, 64]`` float32 intensities in ``[0, 1]``.
        y: ``[n]`` int64 labels ``0..9``.
    """

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]

    def examples(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """``(x, y)``, the generator's user-data accessor."""
        return self.x, self.y


@dataclass(frozen=True, slots=True)
class UserDeletion:
    """What ``delete_user`` removed or revoked.

    Attributes:
        examples: Example uploads deleted.
        tokens: API tokens revoked.
        devices: Device ids revoked (their undelivered packages deleted).
    """

    examples: int
    tokens: int
    devices: tuple[str, ...]


def examples_key(settings: ExamplesSettings, keyring_dir: Path) -> bytes:
    """The AES-256 key for stored examples (see module docstring).

    Raises:
        ConfigurationError: The configured key is malformed, or the key file is not a
            private file of 32 bytes.
    """
    if settings.encryption_key is not None:
        try:
            secret = decode_secret_key(
                settings.encryption_key.get_secret_value(), "examples.encryption_key"
            )
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
    else:
        secret = _key_file(keyring_dir / KEY_FILE_NAME)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_KEY_INFO).derive(secret)


def _key_file(path: Path) -> bytes:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        # A complete file is linked into place: server processes starting together
        # never read a key file that another one has created but not yet written.
        with contextlib.suppress(KeyFormatError):  # another process was first: use its key
            write_private_file(path, secrets.token_bytes(32), overwrite=False)
    info = path.stat()
    if info.st_mode & 0o077:
        raise ConfigurationError(f"{path} must not be readable by group or others")
    secret = path.read_bytes()
    if len(secret) != 32:
        raise ConfigurationError(f"{path} must hold 32 bytes, got {len(secret)}")
    return secret


def _key_id(key: bytes) -> str:
    return hashlib.sha256(_KEY_ID_LABEL + b"\x00" + key).hexdigest()[:16]


def _aad(user_id: int, record_id: str) -> bytes:
    return _AAD_LABEL + b"\x00" + str(user_id).encode() + b"\x00" + record_id.encode()


def check_examples(
    x: object, y: object, *, max_count: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    """Validate one upload's examples.

    Args:
        x: A sequence of rows of 64 numbers in ``[0, 1]``.
        y: A sequence of integer labels ``0..9``, one per row.
        max_count: Most examples one upload may hold.

    Raises:
        ExamplesInvalidError: Wrong shape, type or range; the message names the field
            and, for a bad value, the first index where it is.
        ExamplesLimitError: More than ``max_count`` examples.
    """
    if not isinstance(x, list | tuple):
        raise ExamplesInvalidError(f"x must be a list of rows of {EXAMPLE_FEATURES} numbers")
    n = len(x)
    if n == 0:
        raise ExamplesInvalidError("x must hold at least one example")
    if n > max_count:
        raise ExamplesLimitError(f"one upload may hold at most {max_count} examples, got {n}")
    for i, row in enumerate(x):
        if not isinstance(row, list | tuple) or len(row) != EXAMPLE_FEATURES:
            got = len(row) if isinstance(row, list | tuple) else type(row).__name__
            raise ExamplesInvalidError(
                f"x[{i}] must be a list of {EXAMPLE_FEATURES} numbers, got {got}"
            )
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ExamplesInvalidError(
                    f"x[{i}][{j}] must be a number, got {type(value).__name__}"
                )
            # JSON integers are unbounded: one past float64's range would make the
            # conversion below raise OverflowError (a 500) instead of this error.
            if isinstance(value, int) and not 0 <= value <= 1:
                raise ExamplesInvalidError(f"x[{i}][{j}] must be a finite number in [0, 1]")
    xs = np.asarray(x, dtype=np.float64)
    bad = ~(np.isfinite(xs) & (xs >= 0.0) & (xs <= 1.0))
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise ExamplesInvalidError(f"x[{row}][{col}] must be a finite number in [0, 1]")
    if not isinstance(y, list | tuple) or len(y) != n:
        got = len(y) if isinstance(y, list | tuple) else type(y).__name__
        raise ExamplesInvalidError(f"y must be a list of {n} labels, one per row of x, got {got}")
    for i, label in enumerate(y):
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < 10:
            raise ExamplesInvalidError(
                f"y[{i}] must be an integer label 0..{EXAMPLE_LABELS - 1}, got {_excerpt(label)}"
            )
    return xs.astype(np.float32), np.asarray(y, dtype=np.int64)


def _excerpt(value: object) -> str:
    """``repr(value)`` cut to 32 characters, so an error never echoes a huge input."""
    if isinstance(value, int) and value.bit_length() > 96:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 32 else text[:29] + "..."


def _encode(x: npt.NDArray[np.float32], y: npt.NDArray[np.int64]) -> bytearray:
    out = bytearray(_COUNT.pack(len(y)))
    out += x.astype("<f4").tobytes()
    out += y.astype(np.uint8).tobytes()
    return out


def _decode(plaintext: bytes) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    (n,) = _COUNT.unpack_from(plaintext)
    x_bytes = n * EXAMPLE_FEATURES * 4
    if len(plaintext) != _COUNT.size + x_bytes + n:
        raise ConfigurationError("a stored examples record has the wrong length")
    x = np.frombuffer(plaintext, dtype="<f4", count=n * EXAMPLE_FEATURES, offset=_COUNT.size)
    y = np.frombuffer(plaintext, dtype=np.uint8, count=n, offset=_COUNT.size + x_bytes)
    return x.reshape(n, EXAMPLE_FEATURES).astype(np.float32), y.astype(np.int64)


def delete_expired_examples(session: Session, now: int) -> int:
    """Delete expired uploads and every upload of a disabled user; return how many.

    Runs inside the caller's transaction (the sweeper's).
    """
    disabled = select(User.id).where(User.disabled_at.is_not(None))
    result = session.execute(
        delete(UserExamples).where(
            (UserExamples.expires_at <= now) | UserExamples.user_id.in_(disabled)
        )
    )
    return int(getattr(result, "rowcount", 0) or 0)


class ExamplesService:
    """Stores, lists, deletes and reads users' examples (see module docstring)."""

    def __init__(
        self, sessions: SessionFactory, settings: ExamplesSettings, key: bytes, clock: Clock
    ) -> None:
        """Wire the service; ``key`` comes from :func:`examples_key`."""
        self._sessions = sessions
        self._settings = settings
        self._aead = AESGCM(key)
        self._key_id = _key_id(key)
        self._clock = clock

    def __repr__(self) -> str:
        return f"ExamplesService(key_id={self._key_id})"

    def upload(self, principal: Principal, x: object, y: object) -> tuple[ExamplesInfo, int]:
        """Validate, encrypt and store one upload.

        Returns:
            The stored upload and the user's total of live examples after it.

        Raises:
            ExamplesInvalidError: Wrong shape, type or range.
            ExamplesLimitError: Too many examples in the upload or for the user.
        """
        xs, ys = check_examples(x, y, max_count=self._settings.max_examples_per_upload)
        now = int(self._clock())
        record_id = secrets.token_hex(_RECORD_ID_BYTES)
        plaintext = _encode(xs, ys)
        try:
            nonce = secrets.token_bytes(_NONCE_BYTES)
            sealed = nonce + self._aead.encrypt(
                nonce, bytes(plaintext), _aad(principal.user_id, record_id)
            )
        finally:
            plaintext[:] = bytes(len(plaintext))
        with self._sessions.begin() as session:
            # Lock the user's row so that two concurrent uploads cannot both pass the limit.
            session.execute(
                select(User.id).where(User.id == principal.user_id).with_for_update()
            ).first()
            stored = self._live_count(session, principal.user_id, now)
            limit = self._settings.max_examples_per_user
            if stored + len(ys) > limit:
                raise ExamplesLimitError(
                    f"a user may store at most {limit} examples; {stored} are stored and this "
                    f"upload holds {len(ys)}"
                )
            row = UserExamples(
                record_id=record_id,
                user_id=principal.user_id,
                count=len(ys),
                key_id=self._key_id,
                ciphertext=sealed,
                created_at=now,
                expires_at=now + self._settings.retention_seconds,
            )
            session.add(row)
            info = _info(row)
        _log.info("examples_uploaded", user_id=principal.user_id, count=len(ys))
        return info, stored + len(ys)

    @staticmethod
    def _live_count(session: Session, user_id: int, now: int) -> int:
        total = session.scalar(
            select(func.coalesce(func.sum(UserExamples.count), 0)).where(
                UserExamples.user_id == user_id, UserExamples.expires_at > now
            )
        )
        return int(total or 0)

    def list_for(self, principal: Principal) -> list[ExamplesInfo]:
        """The caller's live uploads, oldest first."""
        now = int(self._clock())
        with self._sessions() as session:
            rows = session.scalars(
                select(UserExamples)
                .where(UserExamples.user_id == principal.user_id, UserExamples.expires_at > now)
                .order_by(UserExamples.created_at, UserExamples.id)
            )
            return [_info(r) for r in rows]

    def delete(self, principal: Principal, record_id: str) -> None:
        """Delete one of the caller's uploads.

        Raises:
            NotFoundError: No such upload, or it is another user's.
        """
        with self._sessions.begin() as session:
            result = session.execute(
                delete(UserExamples).where(
                    UserExamples.record_id == record_id,
                    UserExamples.user_id == principal.user_id,
                )
            )
            if not getattr(result, "rowcount", 0):
                raise NotFoundError("no such examples upload")

    def delete_all(self, principal: Principal) -> int:
        """Delete every upload of the caller; return how many."""
        with self._sessions.begin() as session:
            return self._delete_user_rows(session, principal.user_id)

    @staticmethod
    def _delete_user_rows(session: Session, user_id: int) -> int:
        result = session.execute(delete(UserExamples).where(UserExamples.user_id == user_id))
        return int(getattr(result, "rowcount", 0) or 0)

    def load(self, subject: str) -> StoredExamples | None:
        """Decrypt the live examples of the user whose ``subject`` this is, oldest first.

        Returns:
            None when the user has none, is unknown or is disabled.

        Raises:
            ExamplesKeyError: A row was sealed under another key.
            ConfigurationError: A row does not decrypt (altered, or moved between users).
        """
        now = int(self._clock())
        with self._sessions() as session:
            user = session.scalars(select(User).where(User.subject == subject)).first()
            if user is None or user.disabled_at is not None:
                return None
            rows = list(
                session.scalars(
                    select(UserExamples)
                    .where(UserExamples.user_id == user.id, UserExamples.expires_at > now)
                    .order_by(UserExamples.created_at, UserExamples.id)
                )
            )
            xs, ys = [], []
            for row in rows:
                x, y = self._open(row)
                xs.append(x)
                ys.append(y)
        if not ys:
            return None
        return StoredExamples(np.concatenate(xs), np.concatenate(ys))

    def _open(self, row: UserExamples) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        if row.key_id != self._key_id:
            raise ExamplesKeyError(
                f"examples upload {row.record_id} was sealed under key {row.key_id}, "
                f"not the current key {self._key_id}"
            )
        data = bytes(row.ciphertext)
        try:
            plaintext = bytearray(
                self._aead.decrypt(
                    data[:_NONCE_BYTES], data[_NONCE_BYTES:], _aad(row.user_id, row.record_id)
                )
            )
        except InvalidTag:
            raise ConfigurationError(
                f"examples upload {row.record_id} failed authentication"
            ) from None
        try:
            return _decode(bytes(plaintext))
        finally:
            plaintext[:] = bytes(len(plaintext))

    def user_data(self, subject: str) -> _LazyUserData:
        """The generator's accessor for one user: reads the examples when asked."""
        return _LazyUserData(self, subject)

    def delete_user(
        self, name: str, *, record: Callable[[Session, int], None] | None = None
    ) -> UserDeletion:
        """Delete a built-in user's examples, revoke their tokens and disable the account.

        Devices are revoked by the caller (``DeviceService.admin_revoke``), which also
        deletes their undelivered packages; their ids are returned for that.
        ``record(session, user_id)`` runs last inside the deletion's transaction (the
        audit entry, :meth:`AccountService.record_admin`): if it fails, nothing is deleted.

        Raises:
            NotFoundError: No user has that name.
        """
        now = int(self._clock())
        with self._sessions.begin() as session:
            user = session.scalars(select(User).where(User.name == name)).first()
            if user is None:
                raise NotFoundError(f"no user named {name!r}")
            examples = self._delete_user_rows(session, user.id)
            tokens = session.execute(
                update(ApiToken)
                .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
            devices = tuple(
                session.scalars(
                    select(Device.kid).where(Device.user_id == user.id, Device.revoked_at.is_(None))
                )
            )
            if user.disabled_at is None:
                user.disabled_at = now
            revoked = int(getattr(tokens, "rowcount", 0) or 0)
            if record is not None:
                record(session, user.id)
        _log.info("user_deleted", user_id=user.id, examples=examples, tokens=revoked)
        return UserDeletion(examples, revoked, devices)


class _LazyUserData:
    """One user's data for a generator; nothing is read until :meth:`examples` is called."""

    __slots__ = ("_service", "_subject")

    def __init__(self, service: ExamplesService, subject: str) -> None:
        self._service = service
        self._subject = subject

    def examples(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]] | None:
        """The user's live uploaded examples ``(x, y)``, or None when there are none."""
        stored = self._service.load(self._subject)
        return None if stored is None else stored.examples()


def _info(row: UserExamples) -> ExamplesInfo:
    return ExamplesInfo(row.record_id, row.count, row.created_at, row.expires_at)
