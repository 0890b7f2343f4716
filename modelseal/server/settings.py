"""Server settings: environment (prefix ``MODELSEAL_``) over a TOML file over defaults.

The TOML file is named by ``MODELSEAL_CONFIG`` or by ``--config``. Nested values
come from the environment with ``__`` as separator (``MODELSEAL_AUTH__MODE=oidc``).

``mode = "dev"`` runs everything on one machine with generated secrets.
``mode = "production"`` refuses to start while a secret is missing or weak, or
while the server would speak plain HTTP without declaring a TLS-terminating proxy.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from modelseal.server.errors import ConfigurationError

__all__ = [
    "CONFIG_ENV",
    "LINK_KEY_MIN_BYTES",
    "AbuseSettings",
    "AppleAttestationSettings",
    "AttestationPolicy",
    "AttestationSettings",
    "AuditSettings",
    "AuthSettings",
    "BindingPolicy",
    "ExamplesSettings",
    "KeySettings",
    "ModelSpec",
    "PlayIntegritySettings",
    "QuotaPolicy",
    "Settings",
    "WatermarkPolicy",
    "decode_link_key",
    "decode_secret_key",
    "load_settings",
]

CONFIG_ENV = "MODELSEAL_CONFIG"
LINK_KEY_MIN_BYTES = 32
# Placeholders that documentation or examples might carry; never acceptable as secrets.
_PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "changethis", "secret", "default"})
_MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
# Asymmetric JWS algorithms only: an HMAC or "none" entry would let anyone who
# holds the public JWKS forge tokens (algorithm confusion).
_ALLOWED_JWT_ALGS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)

_config_path: ContextVar[Path | None] = ContextVar("modelseal_config_path", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QuotaPolicy(_Section):
    """How many IMLs of one model one user may obtain per period.

    Periods are fixed windows aligned to the Unix epoch (a ``day`` starts at 00:00
    UTC), so every server process and node agrees on when a quota resets.

    Attributes:
        limit: IML requests accepted per user and period.
        period: ``hour``, ``day``, or a length in seconds (60 s to 366 days).
        suspicious_limit: The limit while the user's fraud verdict is ``suspicious``
            (default: a quarter of ``limit``, at least 1 when ``limit`` is).
    """

    limit: int = Field(ge=0, le=1_000_000)
    period: Literal["hour", "day"] | int = "day"
    suspicious_limit: int | None = Field(default=None, ge=0, le=1_000_000)

    @field_validator("period")
    @classmethod
    def _check_period(cls, value: str | int) -> str | int:
        if isinstance(value, int) and not 60 <= value <= 366 * 86400:
            raise ValueError(f"period must be 'hour', 'day' or 60..31622400 seconds, got {value}")
        return value

    @property
    def period_seconds(self) -> int:
        """The period length in seconds."""
        if self.period == "hour":
            return 3600
        if self.period == "day":
            return 86400
        return int(self.period)

    def limit_for(self, suspicious: bool) -> int:
        """The limit that applies to an OK (``False``) or a suspicious (``True``) user."""
        if not suspicious:
            return self.limit
        if self.suspicious_limit is not None:
            return min(self.suspicious_limit, self.limit)
        return max(self.limit // 4, min(self.limit, 1))


class WatermarkPolicy(_Section):
    """The forensic watermark a model's issuances carry (``docs/WATERMARK.md`` section 1).

    ``watermark = true`` in a model's TOML table is short for ``{ enabled = true }``.

    Attributes:
        enabled: Mark every issuance of the model before it is sealed.
        tensors: Float tensors of the entry model that carry the mark.
        strength: The mark's amplitude as a fraction of each tensor's RMS.
        density: Positions marked out of every 128 (64: half of them).
    """

    enabled: bool = False
    tensors: list[str] = Field(default_factory=lambda: ["fc1.weight"], min_length=1, max_length=64)
    strength: float = Field(default=0.06, gt=0.0, lt=1.0)
    density: int = Field(default=64, ge=1, le=128)


class BindingPolicy(_Section):
    """Model binding at issuance (``docs/WATERMARK.md`` section 2).

    ``binding = true`` in a model's TOML table is short for ``{ enabled = true }``.

    Attributes:
        enabled: Fold a per-device input rotation into ``layer`` of every issuance.
        input: The model input the device SDK transforms.
        layer: The first layer's weight, stored ``[out, in]``.
    """

    enabled: bool = False
    input: str = Field(default="input", min_length=1, max_length=128)
    layer: str = Field(default="fc1.weight", min_length=1, max_length=256)


_ATTESTATION_REQUIREMENT = re.compile(r"[a-z0-9-]{1,32}(:[a-z0-9-]{1,32})?")


class AttestationPolicy(_Section):
    """Which device attestation a model requires (``docs/ATTESTATION.md``).

    Attributes:
        required: Accepted attestations, any one of which suffices, each
            ``"platform"`` or ``"platform:minimum-level"`` (``"apple-appattest:production"``,
            ``"play-integrity:device"``, ``"insecure-dev"``). Empty: none required.
        on_missing: What an IML request from a device without a sufficient attestation
            gets: ``refuse`` (403 ``attestation_required``), ``suspicious`` (served, and an
            ``attestation_missing`` event is recorded) or ``allow``.
        assertion_max_age_seconds: For App Attest devices: each IML request spends one
            assertion verified within this many seconds (``POST /v1/attestation/assertion``);
            None: no per-request assertion.
    """

    required: list[str] = Field(default_factory=list, max_length=16)
    on_missing: Literal["refuse", "suspicious", "allow"] = "allow"
    assertion_max_age_seconds: int | None = Field(default=None, ge=10, le=3600)

    @field_validator("required")
    @classmethod
    def _check_required(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not _ATTESTATION_REQUIREMENT.fullmatch(entry):
                raise ValueError(
                    f"attestation requirement must be 'platform[:level]', got {entry!r}"
                )
        return value


class AppleAttestationSettings(_Section):
    """Apple App Attest.

    Attributes:
        app_ids: Accepted app ids, ``"TEAMID.bundle.id"`` each.
        environments: Accepted AAGUID environments (``production``, ``development``).
        roots: Pinned root PEM files (a bare name means a packaged root).
    """

    app_ids: list[str] = Field(min_length=1, max_length=32)
    environments: list[Literal["production", "development"]] = Field(
        default=["production"], min_length=1
    )
    roots: list[str] = Field(
        default_factory=lambda: ["apple_app_attestation_root_ca.pem"], min_length=1
    )


class PlayIntegritySettings(_Section):
    """Google Play Integrity.

    Attributes:
        package_names: Accepted Android package names.
        decryption_key: Classic tokens: base64 AES-256 key from the Play Console.
        verification_key: Classic tokens: base64 DER (or PEM) P-256 public key.
        backend_key_file: PEM public key (Ed25519 or P-256) of the operator backend
            whose signed, already-decoded verdicts are accepted.
        max_age_seconds: Oldest verdict ``timestampMillis`` accepted.
    """

    package_names: list[str] = Field(min_length=1, max_length=32)
    decryption_key: SecretStr | None = None
    verification_key: str | None = None
    backend_key_file: Path | None = None
    max_age_seconds: int = Field(default=300, ge=10, le=3600)


class AttestationSettings(_Section):
    """Device attestation: challenges, verifiers, the default policy (issue 7).

    Attributes:
        challenge_ttl_seconds: Lifetime of a single-use attestation challenge.
        insecure_dev: Enable the INSECURE development verifier (refused in production).
        apple: App Attest settings; None disables the platform.
        play_integrity: Play Integrity settings; None disables the platform.
        android: Android Key Attestation options (the ``[attestation.android]`` table,
            checked by :func:`modelseal.attestation.android_config.build_android_verifier`
            when the server starts); None disables the platform.
        default_policy: The policy of models that declare none.
    """

    challenge_ttl_seconds: int = Field(default=300, ge=30, le=1800)
    insecure_dev: bool = False
    apple: AppleAttestationSettings | None = None
    play_integrity: PlayIntegritySettings | None = None
    android: dict[str, Any] | None = None
    default_policy: AttestationPolicy = Field(default_factory=AttestationPolicy)


def _policy_shorthand(value: object) -> object:
    return {"enabled": value} if isinstance(value, bool) else value


class ModelSpec(_Section):
    """One model the server can issue.

    Attributes:
        id: The model id clients ask for (``mid`` claim).
        generator: Import path ``"package.module:callable"`` of a Generator.
        ctype: Media type of the plaintext, written to the package header.
        options: Free-form options handed to the generator (for example ``size_bytes``).
        max_issuances_per_day: Per-user quota per UTC day (shorthand for
            ``quota = {limit = N, period = "day"}``); enforced by the quota service.
        quota: Per-user quota policy (limit per period, a lower limit for suspicious
            users); overrides ``max_issuances_per_day``. None and no
            ``max_issuances_per_day``: no quota.
        link_ttl_seconds: Lifetime of a download link.
        package_ttl_seconds: Delivery deadline of a package (``exp = iat + this``).
        blob_ttl_seconds: How long the ciphertext is kept if never acknowledged.
        licence_seconds: Licence length (``lexp = iat + this``); ``None`` omits ``lexp``.
        watermark: Forensic watermark of each issuance (off unless enabled).
        binding: Per-device model binding of each issuance (off unless enabled).
        attestation: Device attestation this model requires (None: the default policy).
    """

    id: str
    generator: str
    ctype: str = "application/octet-stream"
    options: dict[str, str | int | bool] = Field(default_factory=dict)
    max_issuances_per_day: int | None = Field(default=None, ge=0)
    link_ttl_seconds: int = Field(default=300, ge=10, le=3600)
    package_ttl_seconds: int = Field(default=900, ge=60, le=7 * 86400)
    blob_ttl_seconds: int = Field(default=3600, ge=60, le=30 * 86400)
    licence_seconds: int | None = Field(default=7 * 86400, ge=60)
    quota: QuotaPolicy | None = None
    watermark: WatermarkPolicy = Field(default_factory=WatermarkPolicy)
    binding: BindingPolicy = Field(default_factory=BindingPolicy)
    attestation: AttestationPolicy | None = None

    @field_validator("watermark", "binding", mode="before")
    @classmethod
    def _expand_policy(cls, value: object) -> object:
        return _policy_shorthand(value)

    @property
    def quota_policy(self) -> QuotaPolicy | None:
        """The effective quota: ``quota``, else ``max_issuances_per_day`` per day, else None."""
        if self.quota is not None:
            return self.quota
        if self.max_issuances_per_day is not None:
            return QuotaPolicy(limit=self.max_issuances_per_day, period="day")
        return None

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _MODEL_ID.fullmatch(value):
            raise ValueError(f"model id must match {_MODEL_ID.pattern}, got {value!r}")
        return value

    @field_validator("generator")
    @classmethod
    def _check_generator(cls, value: str) -> str:
        if not _IMPORT_PATH.fullmatch(value):
            raise ValueError(f"generator must be 'package.module:callable', got {value!r}")
        return value


class AuthSettings(_Section):
    """How IML endpoints authenticate callers.

    Attributes:
        mode: ``tokens`` (built-in accounts with ``ms_`` API tokens) or ``oidc``
            (bearer JWTs from an identity provider, e.g. Firebase).
        oidc_issuer: Required ``iss`` of accepted JWTs.
        oidc_audience: Required ``aud`` of accepted JWTs.
        oidc_jwks_url: Where to fetch the provider's JWKS (cached).
        oidc_jwks_file: A local JWKS file instead of a URL.
        oidc_algorithms: Accepted JWS algorithms (asymmetric only).
        oidc_leeway_seconds: Clock skew allowed on ``exp``/``iat``/``nbf``.
        oidc_jwks_cache_seconds: How long a fetched JWKS is reused.
        argon2_time_cost: Argon2id passes for API token hashes.
        argon2_memory_kib: Argon2id memory for API token hashes.
        argon2_parallelism: Argon2id lanes for API token hashes.
        token_cache_seconds: How long a token that passed Argon2id is then checked
            against a SHA-256 of its secret kept in process memory instead (0: never).
            Revocation and disabled accounts still take effect on the next request.
        token_cache_entries: Most tokens held in that cache (least recently used go).
    """

    mode: Literal["tokens", "oidc"] = "tokens"
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks_url: str | None = None
    oidc_jwks_file: Path | None = None
    oidc_algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"])
    oidc_leeway_seconds: int = Field(default=30, ge=0, le=300)
    oidc_jwks_cache_seconds: int = Field(default=300, ge=0, le=86400)
    # RFC 9106's second recommended option (64 MiB, 3 passes). API token secrets carry
    # 256 bits of entropy, so lighter settings are safe where latency matters.
    argon2_time_cost: int = Field(default=3, ge=1, le=10)
    argon2_memory_kib: int = Field(default=65536, ge=1024, le=1 << 21)
    argon2_parallelism: int = Field(default=4, ge=1, le=16)
    token_cache_seconds: int = Field(default=300, ge=0, le=3600)
    token_cache_entries: int = Field(default=10_000, ge=1, le=1_000_000)

    @field_validator("oidc_algorithms")
    @classmethod
    def _check_algorithms(cls, value: list[str]) -> list[str]:
        bad = [alg for alg in value if alg not in _ALLOWED_JWT_ALGS]
        if bad or not value:
            raise ValueError(
                f"oidc_algorithms must be a non-empty subset of {sorted(_ALLOWED_JWT_ALGS)}, "
                f"got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _check_oidc(self) -> AuthSettings:
        if self.mode == "oidc":
            missing = [name for name in ("oidc_issuer", "oidc_audience") if not getattr(self, name)]
            if missing:
                raise ValueError(f"auth.mode = 'oidc' requires auth.{missing[0]}")
            if (self.oidc_jwks_url is None) == (self.oidc_jwks_file is None):
                raise ValueError(
                    "auth.mode = 'oidc' requires exactly one of "
                    "auth.oidc_jwks_url and auth.oidc_jwks_file"
                )
        return self


_RATE = re.compile(r"\d{1,9}\s*(/|per)\s*(\d{1,6}\s+)?(second|minute|hour|day)s?", re.IGNORECASE)
_ARGON2_PHC = re.compile(r"\$argon2id\$v=19\$m=\d+,t=\d+,p=\d+\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+")


class AbuseSettings(_Section):
    """Rate limits, fraud verdicts, honey tokens and the admin credential (issue 6).

    Rate limits use the ``limits`` notation (``"120/minute"``, ``"10 per 1 second"``);
    ``None`` disables one limit.

    Attributes:
        rate_limit_storage: ``memory://`` (one process) or ``redis://host:port`` (shared
            by every process and node).
        rate_limit_key_prefix: Prefix of every rate-limit key in shared storage.
        rate_limit_strategy: ``moving-window`` (exact), ``sliding-window-counter``
            (approximate, cheaper) or ``fixed-window`` (cheapest, bursts at edges).
        user_rate_limit: Requests per authenticated user.
        device_rate_limit: Requests per device of a user (``X-Modelseal-Device`` or the path).
        ip_rate_limit: Requests per client address, counted after authentication.
        suspicious_user_rate_limit: Requests per user while the verdict is ``suspicious``.
        suspicious_delay_seconds: Extra latency added to each request of a suspicious user.
        auth_failure_limit: Failed authentications per client address; past it, the
            address is refused before any credential is checked.
        event_record_interval_seconds: At most one ``rate_limited`` (or similar flood)
            event per user and kind in this interval, so a flood writes no row per request.
        rules_file: Fraud rules (TOML); None uses the packaged default rules.
        history_max_events: Most recent events of a user read to compute a verdict.
        history_window_seconds: Oldest event age read to compute a verdict.
        verdict_max_age_seconds: A stored verdict older than this is recomputed on use
            (points decay over time).
        max_events_per_post: Events accepted in one ``POST /v1/events``.
        honey_model_ids: Decoy model ids no honest client requests.
        honey_account_names: Decoy built-in accounts no honest client logs in as.
        honey_device_kids: Decoy device key ids (the ``kid`` a device key is registered
            with, matched exactly) no honest device has.
        admin_token_hash: Argon2id PHC hash of the admin API bearer token; None disables
            the admin API (``modelseal admin fraud admin-token`` makes one).
        api_versions: Accepted ``X-Modelseal-Api-Version`` values (requests without the
            header are accepted as the current version).
        obsolete_api_versions: Versions refused as obsolete (recorded as
            ``api_version_obsolete``); any other unknown value is ``api_version_invalid``.
        link_accounts_by_address: Remember which accounts used which client address, and
            record ``linked_account_blocked`` for accounts sharing an address with a
            blocked one (account farms rotating through accounts).
        address_window_seconds: How long an address use links accounts.
        address_link_max_accounts: Networks used by more accounts than this in the
            window (carrier NAT, corporate proxies) link nobody.
        address_link_prefix_v4: Addresses link by network: IPv4 prefix length (32: exact).
        address_link_prefix_v6: IPv6 prefix length (a /48 is one site or customer).
        address_retention_seconds: Client addresses are kept this long: older
            ``address_uses`` rows are deleted and ``details.ip`` / ``details.network``
            removed from older events by the sweeper (at least ``address_window_seconds``).
        app_events_per_user_limit: Events one user may store through ``POST /v1/events``
            (counted per event, not per request); past it the post is refused 429.
        credential_failure_events_per_interval: ``credential_failure`` events recorded
            per targeted user per ``event_record_interval_seconds`` (one per address).
    """

    rate_limit_storage: str = "memory://"
    rate_limit_key_prefix: str = Field(default="modelseal", pattern=r"^[A-Za-z0-9:._-]{1,64}$")
    rate_limit_strategy: Literal["moving-window", "sliding-window-counter", "fixed-window"] = (
        "moving-window"
    )
    user_rate_limit: str | None = "300/minute"
    device_rate_limit: str | None = "300/minute"
    ip_rate_limit: str | None = "3000/minute"
    suspicious_user_rate_limit: str | None = "30/minute"
    suspicious_delay_seconds: float = Field(default=0.0, ge=0.0, le=10.0)
    auth_failure_limit: str | None = "30/minute"
    event_record_interval_seconds: int = Field(default=60, ge=1, le=86400)
    rules_file: Path | None = None
    history_max_events: int = Field(default=10_000, ge=10, le=1_000_000)
    history_window_seconds: int = Field(default=30 * 86400, ge=3600)
    verdict_max_age_seconds: int = Field(default=300, ge=1, le=86400)
    max_events_per_post: int = Field(default=256, ge=1, le=256)
    honey_model_ids: list[str] = Field(default_factory=list)
    honey_account_names: list[str] = Field(default_factory=list)
    honey_device_kids: list[str] = Field(default_factory=list)
    admin_token_hash: SecretStr | None = None
    api_versions: list[str] = Field(default_factory=lambda: ["1"], min_length=1)
    obsolete_api_versions: list[str] = Field(default_factory=list)
    link_accounts_by_address: bool = True
    address_window_seconds: int = Field(default=86400, ge=60, le=90 * 86400)
    address_link_max_accounts: int = Field(default=20, ge=2, le=10_000)
    address_link_prefix_v4: int = Field(default=24, ge=8, le=32)
    address_link_prefix_v6: int = Field(default=48, ge=16, le=128)
    address_retention_seconds: int = Field(default=30 * 86400, ge=86400, le=400 * 86400)
    app_events_per_user_limit: str | None = "2000/day"
    credential_failure_events_per_interval: int = Field(default=10, ge=1, le=1000)

    @field_validator(
        "user_rate_limit",
        "device_rate_limit",
        "ip_rate_limit",
        "suspicious_user_rate_limit",
        "auth_failure_limit",
        "app_events_per_user_limit",
    )
    @classmethod
    def _check_rate(cls, value: str | None) -> str | None:
        if value is not None and not _RATE.fullmatch(value.strip()):
            raise ValueError(f"rate limit must look like '120/minute', got {value!r}")
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _check_storage(cls, value: str) -> str:
        if not value.startswith(("memory://", "redis://", "rediss://", "redis+unix://")):
            raise ValueError(f"rate_limit_storage must be memory:// or redis://..., got {value!r}")
        return value

    @model_validator(mode="after")
    def _check_retention(self) -> AbuseSettings:
        if self.address_retention_seconds < self.address_window_seconds:
            raise ValueError("address_retention_seconds must be at least address_window_seconds")
        return self

    @field_validator("admin_token_hash")
    @classmethod
    def _check_admin_hash(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _ARGON2_PHC.fullmatch(value.get_secret_value()):
            raise ValueError("admin_token_hash must be an Argon2id PHC string ($argon2id$v=19$...)")
        return value


def decode_link_key(text: str) -> bytes:
    """Decode the base64url link signing key and check its strength.

    Raises:
        ValueError: Not base64url, shorter than 32 bytes, or visibly not random.
    """
    if text.strip().lower() in _PLACEHOLDER_SECRETS:
        raise ValueError(
            "link_signing_key is a placeholder; generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    if not re.fullmatch(r"[A-Za-z0-9_-]+={0,2}", text):
        raise ValueError("link_signing_key must be base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("link_signing_key must be base64url") from None
    if len(raw) < LINK_KEY_MIN_BYTES:
        raise ValueError(
            f"link_signing_key must decode to at least {LINK_KEY_MIN_BYTES} bytes, got {len(raw)}"
        )
    # A key of few distinct bytes (all zeros, a repeated pattern) was typed, not generated.
    if len(set(raw)) < len(raw) // 4:
        raise ValueError("link_signing_key does not look random")
    return raw


def decode_secret_key(text: str, name: str) -> bytes:
    """Decode a base64url server secret (watermark, binding) and check its strength.

    Raises:
        ValueError: Not base64url, shorter than 32 bytes, or visibly not random; the
            message names ``name`` and never the value.
    """
    try:
        return decode_link_key(text)
    except ValueError as exc:
        raise ValueError(str(exc).replace("link_signing_key", name)) from None


class KeySettings(_Section):
    """Where the server's signing keys live (issuer, link, checkpoint); docs/KEY_SERVICE.md.

    Attributes:
        backend: ``local`` (key files in ``<data_dir>/keyring``) or ``pkcs11`` (keys
            generated on a token, never extractable; issuer and checkpoint keys are
            ES256, link keys HMAC-SHA256).
        pkcs11_module: Path of the PKCS#11 module (e.g. libsofthsm2.so).
        pkcs11_token_label: Label of the token that holds the keys.
        pkcs11_pin: The token user PIN (``MODELSEAL_KEYS__PKCS11_PIN``); never logged.
        pkcs11_pin_file: A file holding the user PIN instead (first line).
        checkpoint_key_alg: Algorithm of local checkpoint keys (PKCS#11: ES256).
    """

    backend: Literal["local", "pkcs11"] = "local"
    pkcs11_module: Path | None = None
    pkcs11_token_label: str | None = Field(default=None, min_length=1, max_length=32)
    pkcs11_pin: SecretStr | None = None
    pkcs11_pin_file: Path | None = None
    checkpoint_key_alg: Literal["Ed25519", "ES256"] = "Ed25519"

    @model_validator(mode="after")
    def _check_backend(self) -> KeySettings:
        if self.backend == "pkcs11":
            if self.pkcs11_module is None or self.pkcs11_token_label is None:
                raise ValueError(
                    "keys.backend = 'pkcs11' requires keys.pkcs11_module and "
                    "keys.pkcs11_token_label"
                )
            if (self.pkcs11_pin is None) == (self.pkcs11_pin_file is None):
                raise ValueError(
                    "keys.backend = 'pkcs11' requires exactly one of keys.pkcs11_pin "
                    "and keys.pkcs11_pin_file"
                )
        return self


class AuditSettings(_Section):
    """The tamper-evident audit log (docs/AUDIT.md).

    Attributes:
        origin: The checkpoint origin line and signing key name, a schema-less URL
            such as ``example.com/modelseal/audit`` (default ``<issuer_id>/audit``).
        checkpoint_every_entries: Sign a checkpoint once this many entries are new.
        checkpoint_every_seconds: Sign a checkpoint at least this often while there
            are new entries (0 disables the timer).
        export_dir: Append-only directory every checkpoint is also written to, for
            witnesses; put it outside the database host's reach (a separate mount,
            or a directory synced to a write-once bucket). Default
            ``<data_dir>/audit/checkpoints``.
        verifier_keys: The pinned checkpoint verifier keys
            (``name+keyid+base64``) ``modelseal audit`` trusts when no ``--key`` is
            given. Unset, it falls back to the keys the server recorded under
            ``<data_dir>/audit``, which anyone who can write there can extend.
    """

    origin: str | None = Field(default=None, pattern=r"^[^\s+\u2014]{1,256}$")
    checkpoint_every_entries: int = Field(default=1000, ge=1, le=1_000_000)
    checkpoint_every_seconds: int = Field(default=300, ge=0, le=86400)
    export_dir: Path | None = None
    verifier_keys: list[str] = Field(default_factory=list, max_length=64)


class ExamplesSettings(_Section):
    """Users' uploaded personalisation examples (``POST /v1/examples``, issue 5).

    Attributes:
        encryption_key: base64url secret (>= 32 bytes) the at-rest key of stored
            examples is derived from; when unset, ``<data_dir>/keyring/examples.key``
            (32 random bytes, made on first use, mode 0600).
        retention_seconds: How long an upload is kept; the sweeper deletes it after.
        max_examples_per_upload: Examples accepted in one request (a request is also
            bounded by ``max_body_bytes``: about 200 examples per 64 KiB).
        max_examples_per_user: Live examples one user may have stored.
    """

    encryption_key: SecretStr | None = None
    retention_seconds: int = Field(default=30 * 86400, ge=60, le=366 * 86400)
    max_examples_per_upload: int = Field(default=512, ge=1, le=4096)
    max_examples_per_user: int = Field(default=4096, ge=1, le=4096)

    @field_validator("encryption_key")
    @classmethod
    def _check_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_secret_key(value.get_secret_value(), "examples.encryption_key")
        return value


class Settings(BaseSettings):
    """All server settings. See the module docstring for where values come from.

    Attributes:
        mode: ``dev`` or ``production``.
        issuer_id: The ``iss`` claim of issued packages.
        data_dir: Root of local state: database (SQLite), blobs, keyring.
        database_url: SQLAlchemy URL; default SQLite file in ``data_dir``.
        link_signing_key: base64url HMAC key for download links (>= 32 bytes);
            dev mode generates one under ``data_dir`` (mode 0600) when unset.
        host: Bind address of ``modelseal server``.
        port: Bind port of ``modelseal server``.
        tls_certfile: PEM certificate chain for HTTPS.
        tls_keyfile: PEM private key for HTTPS.
        behind_proxy: Declares that a TLS-terminating proxy fronts the server.
        forwarded_allow_ips: Proxies whose ``X-Forwarded-*`` headers are trusted.
        issuer_key_alg: Algorithm of issuer keys created automatically.
        issuer_retire_leeway_seconds: Extra time a rotated-out key stays published.
        jwks_max_age_seconds: ``Cache-Control: max-age`` of the issuer JWKS.
        max_body_bytes: Largest accepted request body.
        max_links_per_issuance: Download links minted for one package at most.
        job_workers: Threads of the in-process job runner.
        max_queued_jobs: Jobs allowed to wait for a job worker; beyond it an IML
            request is refused (429 ``queue_full``) without creating a job.
        max_in_flight_requests: Requests handled at once (downloads count until
            their last byte); beyond it requests get 503 ``overloaded``. ``/healthz``
            and ``/metrics`` are exempt.
        max_working_iml_requests: Requests still being worked on (response not
            started) from which a new IML request gets 503 ``overloaded``, so that
            accepted work is finished first (capped at ``max_in_flight_requests``).
        retry_after_seconds: The ``Retry-After`` of 429 and 503 refusals.
        sweep_interval_seconds: Period of the blob sweeper (0 disables it).
        watermark_secret: base64url key (>= 32 bytes) from which each issuance's
            watermark key is derived; required in production when a model enables
            watermarking; dev mode generates one under ``data_dir`` (mode 0600).
        binding_secret: base64url key (>= 32 bytes) from which each device's binding
            secret is derived; same rules, for models that enable binding.
        auth: Authentication settings.
        abuse: Rate limits, fraud verdicts, honey tokens, admin API.
        attestation: Device attestation verifiers, challenges and default policy.
        keys: Key backend (local keyring or PKCS#11 token).
        audit: Audit log checkpoints and their export directory.
        examples: Uploaded personalisation examples: key, retention, limits.
        models: Declared models.
    """

    model_config = SettingsConfigDict(
        env_prefix="MODELSEAL_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    mode: Literal["dev", "production"] = "dev"
    issuer_id: str = Field(default="modelseal-dev", min_length=1, max_length=256)
    data_dir: Path = Path("modelseal-data")
    database_url: str | None = None
    link_signing_key: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    behind_proxy: bool = False
    forwarded_allow_ips: str = "127.0.0.1"
    issuer_key_alg: Literal["Ed25519", "ES256"] = "Ed25519"
    issuer_retire_leeway_seconds: int = Field(default=300, ge=0, le=86400)
    jwks_max_age_seconds: int = Field(default=300, ge=0, le=86400)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=1 << 20)
    max_links_per_issuance: int = Field(default=20, ge=1, le=1000)
    job_workers: int = Field(default=2, ge=1, le=64)
    # Sized for two cores (docs/PERFORMANCE.md, "Issuance server"): one process reaches
    # its peak throughput with two to four issuances in progress. Admitting new IML
    # requests only below four working requests kept 90 % of that peak at three times
    # overload; with the in-flight limit alone, throughput fell to a fifth. 64 in flight
    # leaves room for downloads streaming to slow clients; 64 queued jobs of a 1 MiB
    # model are about a second of work for two job workers.
    max_queued_jobs: int = Field(default=64, ge=1, le=100_000)
    max_in_flight_requests: int = Field(default=64, ge=1, le=10_000)
    max_working_iml_requests: int = Field(default=4, ge=1, le=10_000)
    retry_after_seconds: int = Field(default=1, ge=1, le=3600)
    sweep_interval_seconds: int = Field(default=3600, ge=0)
    watermark_secret: SecretStr | None = None
    binding_secret: SecretStr | None = None
    auth: AuthSettings = Field(default_factory=AuthSettings)
    abuse: AbuseSettings = Field(default_factory=AbuseSettings)
    attestation: AttestationSettings = Field(default_factory=AttestationSettings)
    keys: KeySettings = Field(default_factory=KeySettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    examples: ExamplesSettings = Field(default_factory=ExamplesSettings)
    models: Annotated[list[ModelSpec], Field(default_factory=list)]

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Explicit arguments, then the environment, then the TOML file."""
        path = _config_path.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @field_validator("models")
    @classmethod
    def _unique_models(cls, value: list[ModelSpec]) -> list[ModelSpec]:
        seen: set[str] = set()
        for spec in value:
            if spec.id in seen:
                raise ValueError(f"model id {spec.id!r} is declared twice")
            seen.add(spec.id)
        return value

    @model_validator(mode="after")
    def _check_mode(self) -> Settings:
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile must be set together")
        if self.link_signing_key is not None:
            decode_link_key(self.link_signing_key.get_secret_value())
        for name in ("watermark_secret", "binding_secret"):
            secret = getattr(self, name)
            if secret is not None:
                decode_secret_key(secret.get_secret_value(), name)
        if self.keys.backend == "pkcs11" and self.link_signing_key is not None:
            raise ValueError(
                "link_signing_key must be unset with keys.backend = 'pkcs11': "
                "link keys are generated on the token"
            )
        if self.mode == "production":
            if self.link_signing_key is None and self.keys.backend == "local":
                raise ValueError(
                    "production mode requires link_signing_key (>= 32 random bytes, base64url)"
                )
            if self.tls_certfile is None and not self.behind_proxy:
                raise ValueError(
                    "production mode refuses plain HTTP: configure tls_certfile "
                    "and tls_keyfile, or declare behind_proxy = true"
                )
            if self.issuer_id == "modelseal-dev":
                raise ValueError("production mode requires an issuer_id of your own")
            if self.watermark_secret is None and any(m.watermark.enabled for m in self.models):
                raise ValueError(
                    "production mode requires watermark_secret (>= 32 random bytes, "
                    "base64url) while a model enables watermarking"
                )
            if self.attestation.insecure_dev or any(
                requirement.split(":")[0] == "insecure-dev"
                for policy in [
                    self.attestation.default_policy,
                    *(m.attestation for m in self.models if m.attestation),
                ]
                for requirement in policy.required
            ):
                raise ValueError(
                    "production mode refuses the insecure-dev attestation verifier "
                    "(attestation.insecure_dev and model attestation policies)"
                )
            if self.binding_secret is None and any(m.binding.enabled for m in self.models):
                raise ValueError(
                    "production mode requires binding_secret (>= 32 random bytes, "
                    "base64url) while a model enables binding"
                )
        return self

    # --- derived values -------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``sqlite:///<data_dir>/modelseal.db``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir.resolve() / 'modelseal.db'}"

    @property
    def blob_dir(self) -> Path:
        """Where ciphertext packages are stored."""
        return self.data_dir / "blobs"

    @property
    def keyring_dir(self) -> Path:
        """Where issuer private keys and their state file live."""
        return self.data_dir / "keyring"

    @property
    def max_package_ttl_seconds(self) -> int:
        """The longest package lifetime over all models (retired keys stay this long)."""
        return max((spec.package_ttl_seconds for spec in self.models), default=900)

    def model(self, model_id: str) -> ModelSpec | None:
        """The declaration of ``model_id``, or None."""
        for spec in self.models:
            if spec.id == model_id:
                return spec
        return None


def load_settings(config: str | os.PathLike[str] | None = None, **overrides: object) -> Settings:
    """Load settings from ``config`` (or ``$MODELSEAL_CONFIG``), the environment and overrides.

    Raises:
        ConfigurationError: The file is missing or the values are invalid; the message
            names the field.
    """
    path_text = config if config is not None else os.environ.get(CONFIG_ENV)
    path = Path(path_text) if path_text else None
    if path is not None and not path.is_file():
        raise ConfigurationError(f"config file {path} does not exist")
    token = _config_path.set(path)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigurationError(_describe(exc)) from None
    finally:
        _config_path.reset(token)


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(item) for item in error["loc"]) or "settings"
        parts.append(f"{where}: {error['msg']}")
    return "invalid settings: " + "; ".join(parts)
