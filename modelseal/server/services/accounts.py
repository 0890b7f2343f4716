"""Accounts and authentication: built-in API tokens, or OIDC bearer JWTs.

API tokens look like ``ms_<token_id>_<secret>``. The server stores an Argon2id hash
of the secret, looks it up by ``token_id`` and verifies in constant time. An unknown
or revoked ``token_id`` is verified against a dummy hash, so response time does not
tell which tokens exist.

Argon2id costs about 160 ms of CPU per check with the default parameters, which
would cap a server at a few requests per second. After a token passes it once, the
process keeps a SHA-256 of its secret for ``auth.token_cache_seconds`` and compares
later presentations against that (in constant time). The database row is still read
on every request, so a revoked token or a disabled account fails at once; a
different secret under the same ``token_id`` never matches the cached digest and
goes to Argon2id. Only memory holds the digests: a database dump still yields only
Argon2id hashes.

OIDC mode accepts JWTs shaped like Firebase ID tokens (``iss``, ``aud``, ``exp``,
``sub``), verified with PyJWT against a JWKS file or URL under an allow-list of
asymmetric algorithms. Each ``(iss, sub)`` maps to one user row, created on first
sight. Packages carry neither: users appear in them only by a random ``subject``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
import structlog
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelseal.server.clock import Clock
from modelseal.server.db.models import ApiToken, User
from modelseal.server.db.session import SessionFactory, reading
from modelseal.server.errors import (
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
)
from modelseal.server.services.audit import AuditAction, AuditLog, admin_actor
from modelseal.server.settings import AuthSettings

__all__ = [
    "LOCAL_PROVIDER",
    "AccountService",
    "Authenticator",
    "OIDCAuthenticator",
    "Principal",
    "TokenAuthenticator",
    "UserInfo",
    "new_subject",
]

_log = structlog.get_logger("modelseal.server.accounts")
LOCAL_PROVIDER = "local"
TOKEN_PREFIX = "ms_"  # noqa: S105 - a prefix, not a secret
_TOKEN_ID = re.compile(r"[0-9a-f]{16}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{32,128}")
_USER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")
MAX_BEARER_CHARS = 8192


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    Attributes:
        user_id: Database id of the user.
        subject: Pseudonymous id written to packages (``sub``).
        name: Account name (built-in accounts) or None.
    """

    user_id: int
    subject: str
    name: str | None


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user as shown to operators."""

    id: int
    name: str | None
    subject: str
    provider: str
    created_at: int


class Authenticator(Protocol):
    """Turns a bearer credential into a :class:`Principal`."""

    def authenticate(self, credential: str) -> Principal:
        """Verify ``credential``; raise :class:`AuthenticationError` if it does not verify."""
        ...


def new_subject() -> str:
    """A fresh pseudonymous user id."""
    return "u_" + secrets.token_hex(16)


def _hasher(settings: AuthSettings) -> PasswordHasher:
    return PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
        type=Type.ID,
    )


def _principal(user: User) -> Principal:
    return Principal(user_id=user.id, subject=user.subject, name=user.name)


class TokenAuthenticator:
    """Verifies built-in ``ms_`` API tokens."""

    def __init__(self, sessions: SessionFactory, settings: AuthSettings) -> None:
        """Verify against the tokens stored through ``sessions``."""
        self._sessions = sessions
        self._hasher = _hasher(settings)
        # A hash of a random secret with the same parameters: misses cost the same.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(32))
        self._cache_seconds = settings.token_cache_seconds
        self._cache_entries = settings.token_cache_entries
        # token_id -> (SHA-256 of the secret, monotonic expiry); see the module docstring.
        self._verified: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._lock = threading.Lock()

    def authenticate(self, credential: str) -> Principal:
        """Verify an ``ms_<token_id>_<secret>`` token."""
        token_id, secret = _split_token(credential)
        row = self._usable_token(token_id)
        if row is not None and self._recently_verified(token_id, secret):
            return _principal(row[1])
        stored = row[0].secret_hash if row is not None else self._dummy_hash
        try:
            self._hasher.verify(stored, secret)
        except (VerificationError, InvalidHashError):
            error = AuthenticationError("authentication failed")
            if row is not None:
                error.user_id = row[1].id  # a wrong secret for this user's token id
            raise error from None
        if row is None:
            raise AuthenticationError("authentication failed")
        self._remember(token_id, secret)
        return _principal(row[1])

    def authenticate_recent(self, credential: str) -> Principal | None:
        """The principal of ``credential`` if it passed Argon2id within
        ``token_cache_seconds`` and is still usable, else None (no Argon2id work).

        Lets honest clients through while their address is locked out by someone else's
        failed logins (a shared NAT): only a secret this process verified matches.
        """
        token_id, secret = _split_token(credential)
        if not self._recently_verified(token_id, secret):
            return None
        row = self._usable_token(token_id)
        return _principal(row[1]) if row is not None else None

    def _usable_token(self, token_id: str) -> tuple[ApiToken, User] | None:
        """The token ``token_id`` and its user, unless unknown, revoked or disabled."""
        # A read: on SQLite it neither waits for nor blocks writers.
        with reading(self._sessions) as session:
            row = session.execute(
                select(ApiToken, User)
                .join(User, User.id == ApiToken.user_id)
                .where(ApiToken.token_id == token_id)
            ).first()
        if row is None or row[0].revoked_at is not None or row[1].disabled_at is not None:
            return None
        return row[0], row[1]

    def _recently_verified(self, token_id: str, secret: str) -> bool:
        if self._cache_seconds == 0:
            return False
        digest = hashlib.sha256(secret.encode()).digest()
        with self._lock:
            entry = self._verified.get(token_id)
            if entry is None:
                return False
            if entry[1] <= time.monotonic():
                del self._verified[token_id]
                return False
            self._verified.move_to_end(token_id)
        return hmac.compare_digest(entry[0], digest)

    def _remember(self, token_id: str, secret: str) -> None:
        if self._cache_seconds == 0:
            return
        entry = (hashlib.sha256(secret.encode()).digest(), time.monotonic() + self._cache_seconds)
        with self._lock:
            self._verified[token_id] = entry
            self._verified.move_to_end(token_id)
            while len(self._verified) > self._cache_entries:
                self._verified.popitem(last=False)


def _split_token(credential: str) -> tuple[str, str]:
    # The secret may contain '_', the token id never does: split at most twice.
    prefix, _, rest = credential.partition(TOKEN_PREFIX)
    token_id, _, secret = rest.partition("_")
    if prefix or not _TOKEN_ID.fullmatch(token_id) or not _SECRET.fullmatch(secret):
        # Still spend one hash, so malformed tokens cost what real ones do.
        token_id, secret = "0" * 16, "x" * 43
    return token_id, secret


class OIDCAuthenticator:
    """Verifies OIDC ID tokens / JWT bearer tokens and provisions their users."""

    def __init__(self, sessions: SessionFactory, settings: AuthSettings, clock: Clock) -> None:
        """Configure from ``settings`` (``mode = "oidc"``).

        Raises:
            ConfigurationError: The JWKS file is unreadable or not a JWK Set.
        """
        if settings.oidc_issuer is None or settings.oidc_audience is None:
            raise ConfigurationError("oidc mode requires auth.oidc_issuer and oidc_audience")
        self._sessions = sessions
        self._clock = clock
        self._issuer = settings.oidc_issuer
        self._audience = settings.oidc_audience
        self._algorithms = list(settings.oidc_algorithms)
        self._leeway = settings.oidc_leeway_seconds
        self._client: jwt.PyJWKClient | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        if settings.oidc_jwks_file is not None:
            try:
                document = json.loads(settings.oidc_jwks_file.read_text("utf-8"))
                jwk_set = jwt.PyJWKSet.from_dict(document)
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                raise ConfigurationError(
                    f"auth.oidc_jwks_file {settings.oidc_jwks_file}: {exc}"
                ) from None
            self._keys = {k.key_id: k for k in jwk_set.keys if k.key_id}
        elif settings.oidc_jwks_url is None:
            raise ConfigurationError("oidc mode requires auth.oidc_jwks_url or oidc_jwks_file")
        else:
            self._client = jwt.PyJWKClient(
                settings.oidc_jwks_url,
                cache_jwk_set=True,
                lifespan=max(settings.oidc_jwks_cache_seconds, 1),
                timeout=5,
            )

    def _signing_key(self, token: str, header: dict[str, Any]) -> Any:
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AuthenticationError("authentication failed")
        if self._client is not None:
            return self._client.get_signing_key_from_jwt(token).key
        key = self._keys.get(kid)
        if key is None:
            raise AuthenticationError("authentication failed")
        return key.key

    def verify(self, token: str) -> dict[str, Any]:
        """Verify the JWT and return its claims.

        Raises:
            AuthenticationError: Signature, algorithm, issuer, audience or time checks failed.
        """
        if len(token) > MAX_BEARER_CHARS:
            raise AuthenticationError("authentication failed")
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in self._algorithms:
                raise AuthenticationError("authentication failed")
            claims: dict[str, Any] = jwt.decode(
                token,
                key=self._signing_key(token, header),
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError:
            raise AuthenticationError("authentication failed") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not 0 < len(subject) <= 256:
            raise AuthenticationError("authentication failed")
        return claims

    def authenticate(self, credential: str) -> Principal:
        """Verify the JWT and return its (possibly new) user."""
        claims = self.verify(credential)
        return self._provision(claims["iss"], claims["sub"])

    def _provision(self, issuer: str, subject: str) -> Principal:
        query = select(User).where(User.provider == issuer, User.provider_subject == subject)
        for _attempt in range(2):
            with self._sessions.begin() as session:
                user = session.scalars(query).first()
                if user is not None:
                    if user.disabled_at is not None:
                        raise AuthenticationError("authentication failed")
                    return _principal(user)
            try:
                with self._sessions.begin() as session:
                    user = User(
                        subject=new_subject(),
                        name=None,
                        provider=issuer,
                        provider_subject=subject,
                        created_at=int(self._clock()),
                    )
                    session.add(user)
                    session.flush()
                    _log.info("user_provisioned", user_id=user.id)
                    return _principal(user)
            except IntegrityError:
                continue  # another request provisioned the same subject first
        raise AuthenticationError("authentication failed")


class AccountService:
    """Operator actions on built-in accounts and tokens.

    With an audit log, every action writes its ``admin.action`` entry in its own
    transaction, so the action and its entry commit together or not at all.
    """

    def __init__(
        self,
        sessions: SessionFactory,
        settings: AuthSettings,
        clock: Clock,
        *,
        audit: AuditLog | None = None,
    ) -> None:
        """Store through ``sessions``; hash with ``settings``' Argon2id parameters."""
        self._sessions = sessions
        self._hasher = _hasher(settings)
        self._clock = clock
        self._audit = audit

    def record_admin(
        self,
        session: Session,
        command: str,
        *,
        actor: str | None = None,
        user_id: int | None = None,
        **details: str | int | None,
    ) -> None:
        """Append the ``admin.action`` entry of ``command`` inside ``session``'s transaction.

        Call it last in the transaction (it holds the log's lock until commit). The
        actor defaults to the operating-system user running the admin CLI.

        Raises:
            SecretFieldError: A detail key names a secret.
        """
        if self._audit is None:
            return
        self._audit.append(
            session,
            AuditAction.ADMIN_ACTION,
            actor=actor or admin_actor(),
            user_id=user_id,
            details={"command": command, **details},
        )

    def _issue_token(self, session: Session, user: User) -> str:
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        session.add(
            ApiToken(
                token_id=token_id,
                user_id=user.id,
                secret_hash=self._hasher.hash(secret),
                created_at=int(self._clock()),
            )
        )
        return f"{TOKEN_PREFIX}{token_id}_{secret}"

    def create_user(self, name: str, *, actor: str | None = None) -> tuple[UserInfo, str]:
        """Create a built-in account and its first API token (returned once, never stored).

        Raises:
            ConflictError: The name is taken.
            ValueError: The name is malformed.
        """
        if not _USER_NAME.fullmatch(name):
            raise ValueError(f"user name must match {_USER_NAME.pattern}, got {name!r}")
        try:
            with self._sessions.begin() as session:
                user = User(
                    subject=new_subject(),
                    name=name,
                    provider=LOCAL_PROVIDER,
                    provider_subject=name,
                    created_at=int(self._clock()),
                )
                session.add(user)
                session.flush()
                token = self._issue_token(session, user)
                info = _info(user)
                self.record_admin(
                    session,
                    "users.create",
                    actor=actor,
                    user_id=user.id,
                    user_name=name,
                    token_id=_token_id(token),
                )
        except IntegrityError:
            raise ConflictError(f"user {name!r} already exists") from None
        return info, token

    def _user_by_name(self, session: Session, name: str) -> User:
        user = session.scalars(select(User).where(User.name == name)).first()
        if user is None:
            raise NotFoundError(f"no user named {name!r}")
        return user

    def create_token(self, name: str, *, actor: str | None = None) -> str:
        """Create another API token for user ``name`` (audited in the same transaction).

        Raises:
            NotFoundError: No user has that name.
        """
        with self._sessions.begin() as session:
            user = self._user_by_name(session, name)
            token = self._issue_token(session, user)
            self.record_admin(
                session,
                "tokens.create",
                actor=actor,
                user_id=user.id,
                user_name=name,
                token_id=_token_id(token),
            )
            return token

    def revoke_token(self, token_id: str, *, actor: str | None = None) -> None:
        """Revoke the token whose id is ``token_id`` (the part after ``ms_``), audited.

        Raises:
            NotFoundError: No such token.
        """
        with self._sessions.begin() as session:
            row = session.scalars(select(ApiToken).where(ApiToken.token_id == token_id)).first()
            if row is None:
                raise NotFoundError(f"no token {token_id!r}")
            if row.revoked_at is None:
                row.revoked_at = int(self._clock())
            self.record_admin(
                session, "tokens.revoke", actor=actor, user_id=row.user_id, token_id=token_id
            )

    def list_tokens(self, name: str) -> list[tuple[str, int, int | None]]:
        """(token_id, created_at, revoked_at) of user ``name``'s tokens."""
        with self._sessions() as session:
            user = self._user_by_name(session, name)
            rows = session.scalars(select(ApiToken).where(ApiToken.user_id == user.id))
            return [(r.token_id, r.created_at, r.revoked_at) for r in rows]

    def list_users(self) -> list[UserInfo]:
        """All users."""
        with self._sessions() as session:
            return [_info(u) for u in session.scalars(select(User).order_by(User.id))]

    def find_user(self, name: str) -> UserInfo:
        """The built-in user ``name``."""
        with self._sessions() as session:
            return _info(self._user_by_name(session, name))


def _token_id(token: str) -> str:
    """The public id part of ``ms_<token_id>_<secret>`` (the secret never leaves here)."""
    return token.split("_")[1] if token.count("_") >= 2 else "-"


def _info(user: User) -> UserInfo:
    return UserInfo(user.id, user.name, user.subject, user.provider, user.created_at)
