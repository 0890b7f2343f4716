"""FileKeystore: device keys and KEKs, one encrypted file per key, in a private directory.

A key file is a small JSON object::

    {"v": 1, "kind": "device" | "kek", "name": ...,
     "kem": "p256", "public": b64u(public key),          (device keys only)
     "kdf": {"alg": "scrypt", "salt", "n", "r", "p"} | {"alg": "keyring", "service", "username",
             "salt"},
     "check": b64u(16 bytes), "nonce": b64u(12 bytes), "ct": b64u(AES-256-GCM(secret) || tag)}

From the file's root key (see :mod:`.secrets`)::

    file_key = HKDF-Expand-SHA256(root, "modelseal/1 keystore key", 32)
    check    = HKDF-Expand-SHA256(root, "modelseal/1 keystore check", 16)
    aad      = "modelseal/1 keystore file" || JSON(every member but check, nonce, ct;
                                               sorted keys, no spaces, ASCII)
    ct       = AES-256-GCM(file_key, nonce, secret, aad)

The secret is the 32-byte canonical private key or KEK. ``check`` tells a wrong
passphrase (:class:`KeystoreLockedError`) from an altered file
(:class:`KeystoreIntegrityError`); it reveals nothing the ciphertext does not:
both need the same scrypt work to test a guess. The AAD binds the name, kind,
public key and KDF parameters, so no member can be swapped between files.

Files are created 0600 in a 0700 directory owned by the user, written to a
temporary file, fsynced and hard-linked into place (which fails if the name is
taken), so a key is never half-written and never overwritten. Keystores refuse
directories and files that other users can read. POSIX only.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from modelseal._ijson import no_duplicate_members
from modelseal.client.keystore.base import (
    KeyExistsError,
    KeyInfo,
    KeyKind,
    KeyNotFoundError,
    KeystoreError,
    KeystoreIntegrityError,
    KeystoreLockedError,
    validate_name,
)
from modelseal.client.keystore.secrets import SecretSource, b64u_decode, b64u_encode
from modelseal.errors import KeyFormatError
from modelseal.keys.kek import KEK
from modelseal.keys.kem import KEM, RecipientPrivateKey, RecipientPublicKey

__all__ = ["FileKeystore"]

FORMAT_VERSION = 1
MAX_FILE_BYTES = 16 * 1024
SECRET_BYTES = 32
FILE_KEY_BYTES = 32
CHECK_BYTES = 16
NONCE_BYTES = 12
TAG_BYTES = 16
FILE_KEY_LABEL = b"modelseal/1 keystore key"
CHECK_LABEL = b"modelseal/1 keystore check"
AAD_LABEL = b"modelseal/1 keystore file"
DIRECTORY_MODE = 0o700
_PRIVATE_BITS = 0o077
_FILE_NAME = re.compile(r"(device|kek)\.([A-Za-z0-9][A-Za-z0-9._-]{0,63})\.json")
_SEALED_MEMBERS = ("check", "nonce", "ct")
_MEMBERS = {
    KeyKind.DEVICE: {"v", "kind", "name", "kem", "public", "kdf", *_SEALED_MEMBERS},
    KeyKind.KEK: {"v", "kind", "name", "kdf", *_SEALED_MEMBERS},
}

Meta = dict[str, object]


_reject_duplicates = no_duplicate_members(
    lambda name: KeyFormatError(f"keystore file has a duplicate member {name!r}")
)


@dataclass(frozen=True, slots=True)
class _Record:
    meta: Meta  # every member the AAD covers
    check: bytes
    nonce: bytes
    ciphertext: bytes


def _file_name(kind: KeyKind, name: str) -> str:
    return f"{kind.value}.{validate_name(name)}.json"


def _expand(root: bytes, label: bytes, length: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), length, label).derive(root)


def _aad(meta: Mapping[str, object]) -> bytes:
    encoded = json.dumps(meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return AAD_LABEL + encoded.encode("ascii")


def _check_private(st: os.stat_result, path: Path, what: str, mode: int) -> None:
    if st.st_uid != os.geteuid():
        raise KeystoreError(f"keystore {what} {path} belongs to uid {st.st_uid}, not to this user")
    if st.st_mode & _PRIVATE_BITS:
        raise KeystoreError(
            f"keystore {what} {path} is open to other users (mode {st.st_mode & 0o777:04o}); "
            f"it must be {mode:04o}"
        )


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _parse(raw: bytes, kind: KeyKind, name: str) -> _Record:
    try:
        document = json.loads(raw.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyFormatError(f"keystore file for {name!r} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise KeyFormatError(f"keystore file for {name!r} must hold a JSON object")
    if set(document) != _MEMBERS[kind]:
        raise KeyFormatError(
            f"keystore file for {name!r} must have members {sorted(_MEMBERS[kind])}, "
            f"got {sorted(document)}"
        )
    if document["v"] != FORMAT_VERSION:
        raise KeyFormatError(
            f"keystore file version must be {FORMAT_VERSION}, got {document['v']!r}"
        )
    if document["kind"] != kind.value or document["name"] != name:
        raise KeyFormatError(f"keystore file for {name!r} names another key")
    if not isinstance(document["kdf"], dict):
        raise KeyFormatError("keystore member 'kdf' must be an object")
    record = _Record(
        meta={key: value for key, value in document.items() if key not in _SEALED_MEMBERS},
        check=b64u_decode(document["check"], "check"),
        nonce=b64u_decode(document["nonce"], "nonce"),
        ciphertext=b64u_decode(document["ct"], "ct"),
    )
    if (
        len(record.check) != CHECK_BYTES
        or len(record.nonce) != NONCE_BYTES
        or len(record.ciphertext) != SECRET_BYTES + TAG_BYTES
    ):
        raise KeyFormatError(f"keystore file for {name!r} has a field of the wrong length")
    return record


def _device_public(meta: Mapping[str, object]) -> RecipientPublicKey:
    kem_label = meta["kem"]
    if not isinstance(kem_label, str):
        raise KeyFormatError("keystore member 'kem' must be a string")
    return RecipientPublicKey(KEM.from_label(kem_label), b64u_decode(meta["public"], "public"))


class FileKeystore:
    """Keys encrypted at rest in files, unlocked by a passphrase or an OS keyring master key.

    Implements :class:`~modelseal.client.keystore.Keystore`. Device keys may use any
    KEM; they are loaded into memory as :class:`~modelseal.keys.RecipientPrivateKey`
    when asked for, so prefer :class:`~modelseal.client.keystore.PKCS11Keystore` or a
    platform keystore where the hardware offers one.
    """

    __slots__ = ("_directory", "_secrets")

    def __init__(self, directory: str | os.PathLike[str], secret_source: SecretSource) -> None:
        """Open (creating it 0700 if needed) a keystore directory.

        Raises:
            KeystoreError: The path is not a directory, or belongs to or is open to
                other users.
        """
        self._directory = Path(directory)
        self._secrets = secret_source
        try:
            self._directory.mkdir(mode=DIRECTORY_MODE, parents=True)
            # mkdir's mode is filtered by the umask; set it exactly.
            self._directory.chmod(DIRECTORY_MODE)
        except FileExistsError:
            pass
        st = self._directory.stat()
        if not stat.S_ISDIR(st.st_mode):
            raise KeystoreError(f"keystore path {self._directory} is not a directory")
        _check_private(st, self._directory, "directory", DIRECTORY_MODE)

    @property
    def directory(self) -> Path:
        """Where the key files are."""
        return self._directory

    def create_device_key(self, name: str, kem: KEM = KEM.P256) -> RecipientPrivateKey:
        """Generate a device key pair and store it sealed.

        Raises:
            KeyExistsError: A device key with this name exists.
        """
        self._refuse_existing(KeyKind.DEVICE, name)
        key = RecipientPrivateKey.generate(kem)
        meta: Meta = {
            "v": FORMAT_VERSION,
            "kind": KeyKind.DEVICE.value,
            "name": name,
            "kem": kem.label,
            "public": b64u_encode(key.public_key().raw),
        }
        self._store(KeyKind.DEVICE, name, meta, key.secret_bytes())
        return key

    def device_key(self, name: str) -> RecipientPrivateKey:
        """Unseal the device key ``name``.

        Raises:
            KeyNotFoundError: No such device key.
            KeystoreLockedError: Wrong passphrase or keyring master key.
            KeystoreIntegrityError: The file was altered.
            KeyFormatError: The file is malformed.
        """
        record = self._load(KeyKind.DEVICE, name)
        public = _device_public(record.meta)
        key = RecipientPrivateKey(public.kem, self._unseal(record, name))
        if key.public_key() != public:
            raise KeystoreIntegrityError(f"device key {name!r} does not match its public key")
        return key

    def create_kek(self, name: str) -> KEK:
        """Generate an AES-256 KEK labelled ``name`` and store it sealed.

        Raises:
            KeyExistsError: A KEK with this name exists.
        """
        self._refuse_existing(KeyKind.KEK, name)
        kek = KEK.generate(name)
        meta: Meta = {"v": FORMAT_VERSION, "kind": KeyKind.KEK.value, "name": name}
        self._store(KeyKind.KEK, name, meta, kek.secret_bytes())
        return kek

    def kek(self, name: str) -> KEK:
        """Unseal the KEK ``name``.

        Raises:
            KeyNotFoundError, KeystoreLockedError, KeystoreIntegrityError, KeyFormatError:
                As for :meth:`device_key`.
        """
        record = self._load(KeyKind.KEK, name)
        return KEK(name, self._unseal(record, name))

    def list_keys(self) -> list[KeyInfo]:
        """Every entry, from the files' unencrypted members; nothing is unsealed.

        A device key's KEM and kid here come from members that only
        :meth:`device_key` authenticates: a listing shows what a file claims.

        Raises:
            KeyFormatError: A key file is malformed.
        """
        found: list[KeyInfo] = []
        for entry in os.listdir(self._directory):
            match = _FILE_NAME.fullmatch(entry)
            if match is None:
                continue
            kind, name = KeyKind(match[1]), match[2]
            record = self._load(kind, name)
            if kind is KeyKind.DEVICE:
                public = _device_public(record.meta)
                found.append(KeyInfo(name, kind, kem=public.kem, kid=public.kid))
            else:
                found.append(KeyInfo(name, kind))
        order = list(KeyKind)
        return sorted(found, key=lambda info: (order.index(info.kind), info.name))

    def delete(self, kind: KeyKind, name: str) -> None:
        """Remove the key file.

        Raises:
            KeyNotFoundError: No such key.
        """
        try:
            (self._directory / _file_name(kind, name)).unlink()
        except FileNotFoundError:
            raise KeyNotFoundError(f"no {kind.value} key named {name!r}") from None
        _fsync_directory(self._directory)

    def _refuse_existing(self, kind: KeyKind, name: str) -> None:
        # A fast answer before the key generation and KDF; the hard link in _write is the
        # authoritative check when two writers race.
        if (self._directory / _file_name(kind, name)).exists():
            raise KeyExistsError(f"a {kind.value} key named {name!r} already exists")

    def _store(self, kind: KeyKind, name: str, meta: Meta, secret: bytes) -> None:
        kdf = self._secrets.new_params()
        meta["kdf"] = kdf
        root = self._secrets.root_key(kdf)
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = AESGCM(_expand(root, FILE_KEY_LABEL, FILE_KEY_BYTES)).encrypt(
            nonce, secret, _aad(meta)
        )
        document = {
            **meta,
            "check": b64u_encode(_expand(root, CHECK_LABEL, CHECK_BYTES)),
            "nonce": b64u_encode(nonce),
            "ct": b64u_encode(ciphertext),
        }
        data = (json.dumps(document, sort_keys=True, indent=1) + "\n").encode("ascii")
        self._write_new(_file_name(kind, name), data, kind, name)

    def _write_new(self, file_name: str, data: bytes, kind: KeyKind, name: str) -> None:
        fd, temp_name = tempfile.mkstemp(dir=self._directory, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(temp_name, self._directory / file_name)
            except FileExistsError:
                raise KeyExistsError(f"a {kind.value} key named {name!r} already exists") from None
        finally:
            os.unlink(temp_name)
        _fsync_directory(self._directory)

    def _load(self, kind: KeyKind, name: str) -> _Record:
        path = self._directory / _file_name(kind, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise KeyNotFoundError(f"no {kind.value} key named {name!r}") from None
        except OSError as exc:
            raise KeystoreError(f"cannot open keystore file {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as src:
            st = os.fstat(src.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise KeystoreError(f"keystore file {path} is not a regular file")
            _check_private(st, path, "file", 0o600)
            raw = src.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise KeyFormatError(f"keystore file {path} is larger than {MAX_FILE_BYTES} bytes")
        return _parse(raw, kind, name)

    def _unseal(self, record: _Record, name: str) -> bytes:
        kdf = record.meta["kdf"]
        assert isinstance(kdf, dict)  # checked by _parse
        root = self._secrets.root_key(kdf)
        if not hmac.compare_digest(_expand(root, CHECK_LABEL, CHECK_BYTES), record.check):
            raise KeystoreLockedError(f"wrong passphrase or master key for key {name!r}")
        file_key = _expand(root, FILE_KEY_LABEL, FILE_KEY_BYTES)
        try:
            return AESGCM(file_key).decrypt(record.nonce, record.ciphertext, _aad(record.meta))
        except InvalidTag:
            raise KeystoreIntegrityError(
                f"key file for {name!r} failed authentication: it was altered"
            ) from None
