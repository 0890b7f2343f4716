"""Keyrings made before the key service: ``<keyring>/state.json``, imported once.

Earlier versions kept issuer key states in ``state.json`` next to the ``<kid>.jwk``
files::

    {"version": 1, "keys": [{kid, alg, state, created_at, retiring_until, retired_at}]}

with states ``active``, ``retiring`` and ``retired``. :func:`read_legacy_keyring`
turns it into ``managed_keys`` rows (the key files stay where they are: the local
backend uses the same names); :func:`mark_imported` renames the file afterwards so
that it is not taken for the current state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelseal.errors import KeyFormatError
from modelseal.keys import IssuerPrivateKey, SignatureAlgorithm, key_to_jwk
from modelseal.keys.jwk import load_key
from modelseal.server.db.key_models import ManagedKey
from modelseal.server.errors import ConfigurationError
from modelseal.server.keyservice.base import KeyPurpose

__all__ = ["LEGACY_STATE_FILE", "mark_imported", "read_legacy_keyring"]

LEGACY_STATE_FILE = "state.json"
_STATES = ("active", "retiring", "retired")


def read_legacy_keyring(directory: Path) -> list[ManagedKey] | None:
    """The rows of the keyring in ``directory``, or None when it has no ``state.json``.

    Raises:
        ConfigurationError: The state file or a key file it names is unreadable or
            inconsistent (the message names the file and the problem).
    """
    path = directory / LEGACY_STATE_FILE
    if not path.exists():
        return None
    try:
        document = json.loads(path.read_text("utf-8"))
        entries = document["keys"]
        if document.get("version") != 1 or not isinstance(entries, list):
            raise ValueError("unknown version")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(f"keyring state {path} is unreadable: {exc}") from None
    return [_row(directory, entry) for entry in entries]


def mark_imported(directory: Path) -> None:
    """Rename ``state.json`` to ``state.json.imported``."""
    path = directory / LEGACY_STATE_FILE
    path.rename(path.with_name(LEGACY_STATE_FILE + ".imported"))


def _int_or_none(entry: dict[str, Any], name: str) -> int | None:
    value = entry.get(name)
    if value is not None and type(value) is not int:
        raise ConfigurationError(f"keyring state entry: {name} must be an integer, got {value!r}")
    return value


def _row(directory: Path, entry: Any) -> ManagedKey:
    if not isinstance(entry, dict):
        raise ConfigurationError("keyring state entry is not an object")
    kid, alg, state, created_at = (entry.get(n) for n in ("kid", "alg", "state", "created_at"))
    if not isinstance(kid, str) or not isinstance(alg, str) or type(created_at) is not int:
        raise ConfigurationError("keyring state entry needs kid, alg and created_at")
    if state not in _STATES:
        raise ConfigurationError(f"keyring state entry {kid}: unknown state {state!r}")
    try:
        algorithm = SignatureAlgorithm(alg)
    except ValueError:
        raise ConfigurationError(f"keyring state entry {kid}: unknown alg {alg!r}") from None
    public: dict[str, Any] | None = None
    if state != "retired":
        try:
            key = load_key(directory / f"{kid}.jwk")
        except KeyFormatError as exc:
            raise ConfigurationError(f"issuer key {kid}: {exc.message}") from None
        if not isinstance(key, IssuerPrivateKey) or key.kid != kid or key.alg is not algorithm:
            raise ConfigurationError(f"{kid}.jwk is not the {alg} issuer private key {kid}")
        public = key_to_jwk(key.public_key())
    return ManagedKey(
        purpose=str(KeyPurpose.ISSUER),
        kid=kid,
        backend="local",
        alg=str(algorithm),
        state=state,
        handle=f"{kid}.jwk",
        public_jwk=public,
        created_at=created_at,
        activated_at=created_at if state == "active" else None,
        retiring_until=_int_or_none(entry, "retiring_until"),
        retired_at=_int_or_none(entry, "retired_at"),
    )
