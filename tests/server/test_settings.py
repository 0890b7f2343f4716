"""Settings: production refuses default secrets and plain HTTP; file, env and overrides."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest

from modelseal.server.errors import ConfigurationError
from modelseal.server.settings import load_settings

GOOD_KEY = secrets.token_urlsafe(32)
PRODUCTION = {"mode": "production", "issuer_id": "https://issuer.example", "behind_proxy": True}


def refused(match: str, **values: object) -> ConfigurationError:
    with pytest.raises(ConfigurationError, match=match) as info:
        load_settings(**values)
    assert info.value.code == "config_invalid"
    return info.value


def test_production_requires_a_link_signing_key() -> None:
    refused("requires link_signing_key", **PRODUCTION)


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("changeme", "placeholder"),
        (base64.urlsafe_b64encode(bytes(32)).decode(), "does not look random"),
        (secrets.token_urlsafe(16), "at least 32 bytes"),
        ("not base64!", "base64url"),
    ],
    ids=["placeholder", "zeros", "short", "not-base64"],
)
def test_weak_link_signing_keys_are_refused(key: str, why: str) -> None:
    error = refused(why, link_signing_key=key, **PRODUCTION)
    assert key not in error.message


def test_production_refuses_plain_http_without_a_proxy_declaration() -> None:
    values = {**PRODUCTION, "behind_proxy": False, "link_signing_key": GOOD_KEY}
    refused("refuses plain HTTP", **values)


def test_production_accepts_tls_or_a_declared_proxy(tmp_path: Path) -> None:
    assert load_settings(link_signing_key=GOOD_KEY, **PRODUCTION).behind_proxy
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    values = {**PRODUCTION, "behind_proxy": False, "link_signing_key": GOOD_KEY}
    settings = load_settings(tls_certfile=cert, tls_keyfile=key, **values)
    assert settings.tls_certfile == cert


def test_production_requires_an_issuer_id_of_its_own() -> None:
    refused("issuer_id", mode="production", behind_proxy=True, link_signing_key=GOOD_KEY)


def test_dev_mode_starts_with_defaults() -> None:
    settings = load_settings()
    assert settings.mode == "dev"
    assert settings.link_signing_key is None


def test_toml_file_then_environment_then_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        'issuer_id = "from-file"\nport = 9000\n[auth]\nmode = "tokens"\n'
        '[[models]]\nid = "m"\ngenerator = "pkg.mod:gen"\nlink_ttl_seconds = 60\n'
    )
    monkeypatch.setenv("MODELSEAL_CONFIG", str(config))
    monkeypatch.setenv("MODELSEAL_PORT", "9100")
    settings = load_settings()
    assert (settings.issuer_id, settings.port) == ("from-file", 9100)
    spec = settings.model("m")
    assert spec is not None
    assert (spec.link_ttl_seconds, spec.package_ttl_seconds, spec.blob_ttl_seconds) == (
        60,
        900,
        3600,
    )
    assert load_settings(config, port=9200).port == 9200


def test_a_missing_config_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist") as info:
        load_settings(tmp_path / "absent.toml")
    assert info.value.code == "config_invalid"


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"models": [{"id": "m", "generator": "no colon"}]}, "generator"),
        ({"models": [{"id": "bad id", "generator": "a:b"}]}, "id"),
        ({"models": [{"id": "m", "generator": "a:b"}] * 2}, "declared twice"),
        ({"auth": {"mode": "oidc", "oidc_issuer": "i", "oidc_audience": "a"}}, "oidc_jwks"),
        ({"auth": {"mode": "oidc", "oidc_audience": "a", "oidc_jwks_url": "u"}}, "oidc_issuer"),
        ({"auth": {"oidc_algorithms": ["HS256"]}}, "oidc_algorithms"),
        ({"auth": {"oidc_algorithms": ["none"]}}, "oidc_algorithms"),
        ({"unknown_setting": 1}, "unknown_setting"),
        ({"tls_certfile": "c.pem"}, "together"),
    ],
)
def test_invalid_settings_name_the_field(values: dict, field: str) -> None:  # type: ignore[type-arg]
    refused(field, **values)
