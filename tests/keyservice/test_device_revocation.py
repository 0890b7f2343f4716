"""Devices and issuer key revocation, over real HTTP: a real server process, admin
commands in processes of their own, and device clients.

A device keeps models at rest with the kid of the issuer key that signed them
(``ikid``, authenticated by its KEK). After the operator revokes that key and the
device refreshes its pins, the stored model is refused (``issuer_key_revoked``),
and fetching it again gets a package signed by the new key.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tests.e2e.conftest as e2e
from modelseal.client import DeviceClient
from modelseal.client.errors import IssuerKeyRevokedError
from modelseal.server.cli import admin_app
from modelseal.server.logging import configure_logging
from tests.softhsm import SoftHSM

from .conftest import HTTP_TOKEN

MODELS = [{"id": "m1", "generator": e2e.TEST_GENERATOR, "options": {"size_bytes": 20_000}}]


@contextmanager
def server_with(
    directory: Path, monkeypatch: pytest.MonkeyPatch, extra_toml: str = ""
) -> Iterator[e2e.ServerProcess]:
    """:func:`tests.e2e.conftest.run_server` with ``extra_toml`` appended to its config."""
    plain = e2e.write_config

    def write_config(*args: Any, **kwargs: Any) -> Path:
        path = plain(*args, **kwargs)
        path.write_text(path.read_text() + extra_toml)
        return path

    monkeypatch.setattr(e2e, "write_config", write_config)
    with e2e.run_server(directory, MODELS, users=2) as server:
        yield server


def admin_keys(server: e2e.ServerProcess, *args: str) -> list[list[str]]:
    """``modelseal admin keys ARGS`` on the server's config, from this process (not the
    server's: the server sees the change through the database, as with a real operator)."""
    try:
        result = CliRunner().invoke(admin_app, ["--config", str(server.config), "keys", *args])
    finally:
        configure_logging(io.StringIO())  # the runner closes the stream the CLI logged to
    assert result.exit_code == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines()]


def plaintext(client: DeviceClient, model_id: str) -> bytes:
    with client.open_plaintext(model_id) as (_, view):
        return bytes(view)


def revocation_flow(server: e2e.ServerProcess, root: Path) -> None:
    client = e2e.enrolled(server, root)
    first = client.fetch("m1")
    (old,) = tuple(client.pinned_issuers())
    assert first.issuer_kid == old
    (stored,) = client.models()
    assert stored.issuer_kid == old
    assert stored.header.claims is not None
    assert stored.header.claims.extra["ikid"] == old  # authenticated by the KEK
    model = plaintext(client, "m1")

    # Rotation: create (published at once), then activate. The old key retires.
    ((_, new, *_),) = admin_keys(server, "create", "issuer", "--alg", "ES256")
    refreshed = client.pin_refresh()
    assert set(refreshed.after) == {old, new}
    admin_keys(server, "activate", "issuer", new)
    assert plaintext(client, "m1") == model  # a retiring key's models still load

    # Revocation: the device keeps working until it refreshes its pins...
    ((_, _, _, _, state, *_),) = admin_keys(
        server, "revoke", "issuer", old, "--reason", "key compromise drill"
    )
    assert state.startswith("revoked")
    assert plaintext(client, "m1") == model
    refreshed = client.pin_refresh()
    assert refreshed.removed == (old,)
    assert refreshed.after == (new,)
    assert client.revoked_issuers() == {old}
    # ... and then refuses what the revoked key signed, with a stable code.
    with pytest.raises(IssuerKeyRevokedError, match="revoked") as caught:
        plaintext(client, "m1")
    assert caught.value.code == "issuer_key_revoked"
    with pytest.raises(IssuerKeyRevokedError):
        client.load("m1")
    # Fetching again replaces it with a package the new key signed.
    second = client.fetch("m1")
    assert second.issuer_kid == new
    assert second.acknowledged
    assert plaintext(client, "m1") == model


@pytest.mark.slow  # the SoftHSM2 run below is the same flow, and runs by default
def test_a_device_refuses_a_revoked_keys_stored_model_after_a_pin_refresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with server_with(tmp_path / "server", monkeypatch) as server:
        revocation_flow(server, tmp_path / "phone")


def test_the_same_over_http_with_every_key_on_softhsm2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hsm: SoftHSM
) -> None:
    pin_file = tmp_path / "token.pin"
    pin_file.write_text(hsm.user_pin + "\n")
    pin_file.chmod(0o600)
    extra = (
        "[keys]\n"
        'backend = "pkcs11"\n'
        f'pkcs11_module = "{hsm.module}"\n'
        f'pkcs11_token_label = "{HTTP_TOKEN}"\n'
        f'pkcs11_pin_file = "{pin_file}"\n'
    )
    with server_with(tmp_path / "server", monkeypatch, extra) as server:
        rows = admin_keys(server, "list")
        assert {(row[0], row[2], row[3]) for row in rows} == {
            ("issuer", "pkcs11", "ES256"),
            ("link", "pkcs11", "HS256"),
            ("checkpoint", "pkcs11", "ES256"),
        }
        revocation_flow(server, tmp_path / "phone")
        log = server.log_path.read_text()
    assert hsm.user_pin not in log
    assert hsm.user_pin not in "".join(
        p.read_text(errors="replace") for p in (tmp_path / "server").glob("*.toml")
    )
