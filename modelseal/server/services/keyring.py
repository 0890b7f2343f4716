"""The issuer keyring: the issuer purpose of the key service, as issuance and the JWKS use it.

The keys themselves, their lifecycle (created, active, retiring, retired,
revoked) and its audit live in :mod:`modelseal.server.keyservice`; this class is
the view the issuance service, the sweeper, the public JWKS endpoint and
``modelseal admin rotate-issuer-key`` have always used. Local issuer keys keep the
layout of the keyring directory (``<data_dir>/keyring/<kid>.jwk``, mode 0600); a
keyring made before the key service is imported from its ``state.json`` on the
first start (see :meth:`KeyService.ensure`).

Every call reads the key states from the database, so a rotation made by
``modelseal admin`` takes effect on a running server at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from modelseal.keys import IssuerPublicKey, SignatureAlgorithm
from modelseal.server.keyservice import SYSTEM_ACTOR, KeyPurpose, KeyService, ManagedSigner

__all__ = ["KeyState", "Keyring"]


@dataclass(frozen=True, slots=True)
class KeyState:
    """One issuer key's lifecycle entry, as ``rotate-issuer-key`` prints it."""

    kid: str
    alg: str
    state: str
    created_at: int
    retiring_until: int | None = None
    retired_at: int | None = None


class Keyring:
    """Issuer keys: the active signer, the published JWK Set, rotation."""

    def __init__(self, keys: KeyService) -> None:
        """View the issuer keys of ``keys``."""
        self._keys = keys

    @property
    def keys(self) -> KeyService:
        """The key service behind this view."""
        return self._keys

    def ensure(self) -> None:
        """Give every managed purpose an active key (idempotent)."""
        self._keys.ensure()

    def rotate(
        self, alg: SignatureAlgorithm | None = None, *, actor: str = SYSTEM_ACTOR
    ) -> KeyState:
        """Create and activate a new issuer key; the old one retires once its packages expire.

        Returns:
            The new key's state entry.
        """
        info = self._keys.rotate(
            KeyPurpose.ISSUER, str(alg) if alg is not None else None, actor=actor
        )
        return KeyState(
            kid=info.kid, alg=info.alg, state=str(info.state), created_at=info.created_at
        )

    def states(self) -> list[KeyState]:
        """All issuer keys, oldest first."""
        return [
            KeyState(
                kid=info.kid,
                alg=info.alg,
                state=str(info.state),
                created_at=info.created_at,
                retiring_until=info.retiring_until,
                retired_at=info.retired_at or info.revoked_at,
            )
            for info in self._keys.list_keys(KeyPurpose.ISSUER)
        ]

    def active_signer(self) -> ManagedSigner:
        """The key that signs new packages.

        Raises:
            ConfigurationError: No active key, or it is unusable.
        """
        return self._keys.issuer_signer()

    def published(self) -> list[IssuerPublicKey]:
        """Keys verifiers should pin now: created, active, and retiring within their window."""
        return self._keys.published_issuer_keys()

    def jwks(self) -> dict[str, Any]:
        """The published JWK Set (public members only), with the ``revoked`` kids."""
        return self._keys.issuer_jwks()

    def prune(self) -> list[str]:
        """Retire keys (of every purpose) past their window and destroy their private halves."""
        return self._keys.prune()
