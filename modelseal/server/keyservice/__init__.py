"""The key service: the server's signing keys by purpose, on a local or PKCS#11 backend.

* :mod:`.base`: purposes, states, the :class:`KeyBackend` protocol and its errors;
* :mod:`.local`: key files in the keyring directory (embedded default);
* :mod:`.pkcs11`: keys generated on a PKCS#11 token that never leave it;
* :mod:`.service`: :class:`KeyService`, lifecycle in the database, audited;
* :mod:`.legacy`: the one-time import of a keyring from before the key service.

The audit log signs its checkpoints with the active checkpoint key through
:func:`modelseal.audit.note.note_signer_for`.

:func:`build_key_service` wires one from the settings. docs/KEY_SERVICE.md is the
operator's guide.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import structlog
from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.orm import sessionmaker

from modelseal.keys.pkcs11 import TokenError
from modelseal.server.clock import Clock
from modelseal.server.db.session import SessionFactory
from modelseal.server.errors import ConfigurationError
from modelseal.server.keyservice.base import (
    HMAC_SHA256,
    GeneratedKey,
    KeyBackend,
    KeyNotFoundError,
    KeyPurpose,
    KeyState,
    KeyStateError,
    KeyUnsupportedError,
    MACKey,
    ManagedSigner,
)
from modelseal.server.keyservice.local import LocalBackend, StaticMACKey
from modelseal.server.keyservice.service import SYSTEM_ACTOR, KeyInfo, KeyService
from modelseal.server.services.audit import AuditLog
from modelseal.server.services.events import EventService
from modelseal.server.settings import KeySettings, Settings, decode_link_key

__all__ = [
    "HMAC_SHA256",
    "SYSTEM_ACTOR",
    "GeneratedKey",
    "KeyBackend",
    "KeyInfo",
    "KeyNotFoundError",
    "KeyPurpose",
    "KeyService",
    "KeyState",
    "KeyStateError",
    "KeyUnsupportedError",
    "LocalBackend",
    "MACKey",
    "ManagedSigner",
    "StaticMACKey",
    "build_key_service",
    "read_pin",
]

_log = structlog.get_logger("modelseal.server.keys")
_MAX_PIN_FILE_BYTES = 1024


def read_pin(keys: KeySettings) -> str:
    """The token user PIN from the settings or the PIN file (first line).

    Raises:
        ConfigurationError: No PIN, or the file is unreadable, empty, or readable by
            group or others. The message never contains the PIN.
    """
    if keys.pkcs11_pin is not None:
        pin = keys.pkcs11_pin.get_secret_value()
    elif keys.pkcs11_pin_file is not None:
        try:
            with Path(keys.pkcs11_pin_file).open("rb") as handle:
                if os.fstat(handle.fileno()).st_mode & 0o077:
                    raise ConfigurationError(
                        f"keys.pkcs11_pin_file {keys.pkcs11_pin_file} must not be readable "
                        "by group or others (chmod 600)"
                    )
                data = handle.read(_MAX_PIN_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigurationError(
                f"keys.pkcs11_pin_file {keys.pkcs11_pin_file} is unreadable: {exc.strerror}"
            ) from None
        if len(data) > _MAX_PIN_FILE_BYTES:
            raise ConfigurationError("keys.pkcs11_pin_file is too large to hold a PIN")
        lines = data.decode("utf-8", "replace").splitlines()
        pin = lines[0] if lines else ""
    else:
        raise ConfigurationError("keys.backend = 'pkcs11' requires a PIN")
    if not pin:
        raise ConfigurationError("the PKCS#11 PIN is empty")
    return pin


def _backend(settings: Settings) -> KeyBackend:
    keys = settings.keys
    if keys.backend == "local":
        return LocalBackend(settings.keyring_dir)
    from modelseal.server.keyservice.pkcs11 import PKCS11Backend

    # Both are checked by KeySettings.
    assert keys.pkcs11_module is not None
    assert keys.pkcs11_token_label is not None
    try:
        return PKCS11Backend(keys.pkcs11_module, keys.pkcs11_token_label, read_pin(keys))
    except TokenError as exc:
        raise ConfigurationError(f"PKCS#11 key backend: {exc.code}: {exc.message}") from None


def _static_link_key(settings: Settings) -> StaticMACKey | None:
    if settings.keys.backend != "local":
        return None
    if settings.link_signing_key is not None:
        return StaticMACKey(decode_link_key(settings.link_signing_key.get_secret_value()))
    # Dev only (production refuses to load without a key): one key per data directory,
    # so that every server process on it (`modelseal server --workers N`) checks the
    # links of the others.
    return StaticMACKey(_dev_link_key(settings.data_dir))


def _dev_link_key(data_dir: Path) -> bytes:
    """The dev link key in ``<data_dir>/secrets/link.key`` (mode 0600), created if missing.

    Creation is atomic (a complete file is hard-linked into place), so processes
    starting together agree on one key.

    Raises:
        ConfigurationError: The file is readable by others or does not hold a key.
    """
    directory = data_dir / "secrets"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / "link.key"
    if not path.exists():
        draft = directory / f".link.key.{secrets.token_hex(8)}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(draft, path)
            _log.warning("link_signing_key_generated", detail="dev mode: kept under data_dir")
        except FileExistsError:
            pass  # another process was first: use its key
        finally:
            draft.unlink()
    if path.stat().st_mode & 0o077:
        raise ConfigurationError(f"{path} must not be readable by group or others (chmod 600)")
    try:
        return decode_link_key(path.read_text(encoding="ascii").strip())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from None


def _reader_engine(url: str) -> Engine | None:
    """An autocommit SQLite engine whose reads never take the write lock (None elsewhere)."""
    if not make_url(url).drivername.startswith("sqlite"):
        return None
    return create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        isolation_level="AUTOCOMMIT",
    )


def build_key_service(
    settings: Settings,
    sessions: SessionFactory,
    clock: Clock,
    *,
    events: EventService | None = None,
    audit: AuditLog | None = None,
) -> KeyService:
    """The key service the settings describe, with an active key for every managed purpose.

    Raises:
        ConfigurationError: The backend cannot be opened or a key is unusable.
    """
    backend = _backend(settings)
    reader = _reader_engine(settings.resolved_database_url)
    pkcs11 = settings.keys.backend == "pkcs11"
    leeway = settings.issuer_retire_leeway_seconds
    max_link_ttl = max((spec.link_ttl_seconds for spec in settings.models), default=300)
    service = KeyService(
        sessions,
        backend,
        clock,
        retire_after_seconds={
            KeyPurpose.ISSUER: settings.max_package_ttl_seconds + leeway,
            KeyPurpose.LINK: max_link_ttl + leeway,
            KeyPurpose.CHECKPOINT: leeway,
        },
        default_algs={
            KeyPurpose.ISSUER: "ES256" if pkcs11 else settings.issuer_key_alg,
            KeyPurpose.LINK: HMAC_SHA256,
            KeyPurpose.CHECKPOINT: "ES256" if pkcs11 else settings.keys.checkpoint_key_alg,
        },
        events=events,
        audit=audit,
        static_link_key=_static_link_key(settings),
        legacy_dir=settings.keyring_dir if not pkcs11 else None,
        reads=sessionmaker(reader, expire_on_commit=False) if reader is not None else None,
        on_close=reader.dispose if reader is not None else None,
        # After a move to a token, local keys made before keep verifying until they retire.
        other_backends=(LocalBackend(settings.keyring_dir),) if pkcs11 else (),
    )
    try:
        service.ensure()
    except BaseException:
        service.close()
        raise
    return service
