"""The issuer keyring: local signing keys, their rotation states, and the published JWKS.

Layout of the keyring directory (mode 0700)::

    <kid>.jwk      private issuer key (JWK, mode 0600), one per active or retiring key
    state.json     {"version": 1, "keys": [{kid, alg, state, created_at,
                    retiring_until, retired_at}]}  (mode 0600)
    .lock          flock(2) taken while the state changes

States: ``active`` (signs new packages; exactly one), ``retiring`` (still published
until ``retiring_until`` = rotation time + the longest package TTL + leeway, so every
package it signed can still be verified), ``retired`` (dropped from the JWKS; its
private file is deleted). The server re-reads ``state.json`` when it changes, so
``modelseal admin rotate-issuer-key`` takes effect on a running server.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from modelseal.errors import KeyFormatError
from modelseal.keys import IssuerPrivateKey, IssuerPublicKey, SignatureAlgorithm, key_to_jwk
from modelseal.keys.jwk import load_key, save_key, write_private_file
from modelseal.server.clock import Clock
from modelseal.server.errors import ConfigurationError

__all__ = ["KeyState", "Keyring"]

_log = structlog.get_logger("modelseal.server.keyring")
STATE_FILE = "state.json"
STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class KeyState:
    """One issuer key's entry in ``state.json``."""

    kid: str
    alg: str
    state: str
    created_at: int
    retiring_until: int | None = None
    retired_at: int | None = None


class Keyring:
    """Local issuer keys with rotation."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        clock: Clock,
        *,
        default_alg: SignatureAlgorithm = SignatureAlgorithm.ED25519,
        retire_after_seconds: int,
    ) -> None:
        """Manage the keyring in ``directory``.

        Args:
            directory: The keyring directory (created on :meth:`ensure`).
            clock: Time source.
            default_alg: Algorithm of the first key.
            retire_after_seconds: How long a rotated-out key stays published: the
                longest package TTL plus a leeway.
        """
        self._dir = Path(directory)
        self._clock = clock
        self._default_alg = default_alg
        self._retire_after = retire_after_seconds
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._states: list[KeyState] = []
        self._signers: dict[str, IssuerPrivateKey] = {}
        self._public: dict[str, IssuerPublicKey] = {}

    @property
    def directory(self) -> Path:
        """The keyring directory."""
        return self._dir

    # --- state file -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        fd = os.open(self._dir / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _read_states(self) -> list[KeyState]:
        path = self._dir / STATE_FILE
        try:
            document = json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"keyring state {path} is unreadable: {exc}") from None
        if not isinstance(document, dict) or document.get("version") != STATE_VERSION:
            raise ConfigurationError(f"keyring state {path} has an unknown version")
        try:
            return [KeyState(**entry) for entry in document["keys"]]
        except (KeyError, TypeError) as exc:
            raise ConfigurationError(f"keyring state {path} is malformed: {exc}") from None

    def _write_states(self, states: list[KeyState]) -> None:
        document = {"version": STATE_VERSION, "keys": [asdict(s) for s in states]}
        data = (json.dumps(document, indent=2) + "\n").encode()
        write_private_file(self._dir / STATE_FILE, data, overwrite=True)

    def _refresh(self) -> None:
        """Reload ``state.json`` if another process changed it."""
        try:
            st = (self._dir / STATE_FILE).stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp != self._stamp:
            self._states = self._read_states()
            self._stamp = stamp

    def _expire(self, states: list[KeyState], now: int) -> tuple[list[KeyState], list[str]]:
        retired: list[str] = []
        out = []
        for entry in states:
            if (
                entry.state == "retiring"
                and entry.retiring_until is not None
                and now >= entry.retiring_until
            ):
                entry = replace(entry, state="retired", retired_at=now)
                with contextlib.suppress(FileNotFoundError):
                    (self._dir / f"{entry.kid}.jwk").unlink()
                retired.append(entry.kid)
                _log.info("issuer_key_retired", kid=entry.kid)
            out.append(entry)
        return out, retired

    # --- operations -------------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the directory and a first active key if there is none; retire expired keys."""
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._dir, 0o700)
        with self._lock, self._exclusive():
            states = self._read_states()
            states, retired = self._expire(states, int(self._clock()))
            changed = bool(retired)
            if not any(s.state == "active" for s in states):
                states.append(self._new_key(self._default_alg))
                changed = True
            if changed:
                self._write_states(states)
            self._stamp = None
            self._refresh()

    def _new_key(self, alg: SignatureAlgorithm) -> KeyState:
        key = IssuerPrivateKey.generate(alg)
        save_key(self._dir / f"{key.kid}.jwk", key)
        _log.info("issuer_key_created", kid=key.kid, alg=str(alg))
        return KeyState(kid=key.kid, alg=str(alg), state="active", created_at=int(self._clock()))

    def rotate(self, alg: SignatureAlgorithm | None = None) -> KeyState:
        """Create a new active key; the old one stays published until its packages expire.

        Returns:
            The new key's state entry.
        """
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._lock, self._exclusive():
            now = int(self._clock())
            states, _ = self._expire(self._read_states(), now)
            new = self._new_key(alg or self._default_alg)
            states = [
                replace(s, state="retiring", retiring_until=now + self._retire_after)
                if s.state == "active"
                else s
                for s in states
            ]
            states.append(new)
            self._write_states(states)
            self._stamp = None
            self._refresh()
        _log.info("issuer_key_rotated", kid=new.kid)
        return new

    def states(self) -> list[KeyState]:
        """All key entries, current as of the state file."""
        with self._lock:
            self._refresh()
            return list(self._states)

    def active_signer(self) -> IssuerPrivateKey:
        """The key that signs new packages.

        Raises:
            ConfigurationError: No active key, or its file is missing or invalid.
        """
        with self._lock:
            self._refresh()
            active = [s for s in self._states if s.state == "active"]
            if len(active) != 1:
                raise ConfigurationError("keyring must have exactly one active issuer key")
            kid = active[0].kid
            signer = self._signers.get(kid)
            if signer is None:
                try:
                    key = load_key(self._dir / f"{kid}.jwk")
                except KeyFormatError as exc:
                    raise ConfigurationError(f"active issuer key {kid}: {exc.message}") from None
                if not isinstance(key, IssuerPrivateKey) or key.kid != kid:
                    raise ConfigurationError(f"{kid}.jwk is not the issuer private key {kid}")
                self._signers = {kid: key}
                signer = key
            return signer

    def published(self) -> list[IssuerPublicKey]:
        """Keys verifiers should pin now: the active key and keys still retiring."""
        with self._lock:
            self._refresh()
            now = int(self._clock())
            keys = []
            for entry in self._states:
                live = entry.state == "active" or (
                    entry.state == "retiring"
                    and entry.retiring_until is not None
                    and now < entry.retiring_until
                )
                if not live:
                    continue
                public = self._public.get(entry.kid)
                if public is None:
                    try:
                        key = load_key(self._dir / f"{entry.kid}.jwk")
                    except KeyFormatError:
                        _log.error("issuer_key_unreadable", kid=entry.kid)
                        continue
                    if not isinstance(key, IssuerPrivateKey) or key.kid != entry.kid:
                        _log.error("issuer_key_unreadable", kid=entry.kid)
                        continue
                    public = self._public[entry.kid] = key.public_key()
                keys.append(public)
            return keys

    def jwks(self) -> dict[str, Any]:
        """The published JWK Set (public members only)."""
        return {"keys": [key_to_jwk(key) for key in self.published()]}

    def prune(self) -> list[str]:
        """Mark retiring keys past their date as retired and delete their private files."""
        with self._lock, self._exclusive():
            states, retired = self._expire(self._read_states(), int(self._clock()))
            if retired:
                self._write_states(states)
            self._stamp = None
            self._refresh()
            return retired
