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
from typing import Annotated, Literal

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
    "AuthSettings",
    "ModelSpec",
    "Settings",
    "decode_link_key",
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


class ModelSpec(_Section):
    """One model the server can issue.

    Attributes:
        id: The model id clients ask for (``mid`` claim).
        generator: Import path ``"package.module:callable"`` of a Generator.
        ctype: Media type of the plaintext, written to the package header.
        options: Free-form options handed to the generator (for example ``size_bytes``).
        max_issuances_per_day: Per-user quota; stored now, enforced by the quota service.
        link_ttl_seconds: Lifetime of a download link.
        package_ttl_seconds: Delivery deadline of a package (``exp = iat + this``).
        blob_ttl_seconds: How long the ciphertext is kept if never acknowledged.
        licence_seconds: Licence length (``lexp = iat + this``); ``None`` omits ``lexp``.
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


class Settings(BaseSettings):
    """All server settings. See the module docstring for where values come from.

    Attributes:
        mode: ``dev`` or ``production``.
        issuer_id: The ``iss`` claim of issued packages.
        data_dir: Root of local state: database (SQLite), blobs, keyring.
        database_url: SQLAlchemy URL; default SQLite file in ``data_dir``.
        link_signing_key: base64url HMAC key for download links (>= 32 bytes);
            generated per process in dev mode when unset.
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
        auth: Authentication settings.
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
    auth: AuthSettings = Field(default_factory=AuthSettings)
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
        if self.mode == "production":
            if self.link_signing_key is None:
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
