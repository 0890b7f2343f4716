"""HTTPS servers (a test CA, and a self-signed certificate) and SPKI pinning, end to end."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelseal.client.datadir import write_private_bytes
from modelseal.client.errors import TLSError, TLSPinMismatchError
from modelseal.client.transport import format_pin
from tests.client.tlsutil import CertFiles, ca_signed, self_signed

from .conftest import TEST_GENERATOR, ServerProcess, enrolled, new_client, reopen, run_server

MODELS = [{"id": "m1", "generator": TEST_GENERATOR, "options": {"size_bytes": 40_000}}]
WRONG_PIN = format_pin(hashlib.sha256(b"not the server key").digest())


@pytest.fixture(scope="module")
def ca_certs(tmp_path_factory: pytest.TempPathFactory) -> CertFiles:
    return ca_signed(tmp_path_factory.mktemp("ca-certs"))


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, ca_certs: CertFiles
) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp("tls-server")
    with run_server(
        directory, MODELS, tls=(ca_certs.cert, ca_certs.key), ca_file=ca_certs.ca, users=8
    ) as running:
        yield running


def request_lines(server: ServerProcess) -> list[dict[str, object]]:
    lines = [
        json.loads(line)
        for line in server.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    return [line for line in lines if line.get("event") == "request"]


def test_a_device_enrolled_over_https_with_a_pin_fetches_a_model(
    tls_server: ServerProcess, ca_certs: CertFiles, tmp_path: Path
) -> None:
    client = new_client(tmp_path / "phone")
    result = client.enroll(
        tls_server.url, tls_server.token(), ca_file=ca_certs.ca, pins=[WRONG_PIN, ca_certs.pin]
    )
    assert result.server_pin == ca_certs.pin
    assert result.enrollment.pins == (WRONG_PIN, ca_certs.pin)
    assert result.enrollment.ca_file == str(ca_certs.ca.resolve())
    fetched = client.fetch("m1")
    assert fetched.acknowledged
    assert fetched.plaintext_bytes == 40_000


def test_without_pins_enrolment_reports_the_servers_key_pin(
    tls_server: ServerProcess, ca_certs: CertFiles, tmp_path: Path
) -> None:
    client = enrolled(tls_server, tmp_path / "phone")
    assert client.enrollment.pins == ()
    result = client.pin_refresh()
    assert result.added == ()
    assert (
        new_client(tmp_path / "other")
        .enroll(tls_server.url, tls_server.token(), ca_file=ca_certs.ca)
        .server_pin
        == ca_certs.pin
    )


def test_a_wrong_pin_refuses_enrolment_and_records_the_event(
    tls_server: ServerProcess, ca_certs: CertFiles, tmp_path: Path
) -> None:
    root = tmp_path / "phone"
    client = new_client(root)
    with pytest.raises(TLSPinMismatchError, match="is not pinned") as caught:
        client.enroll(tls_server.url, tls_server.token(), ca_file=ca_certs.ca, pins=[WRONG_PIN])
    assert caught.value.code == "tls_pin_mismatch"
    assert caught.value.observed_pin == ca_certs.pin
    assert reopen(root).config.enrollment is None
    assert not (root / "issuer-jwks.json").exists()
    (event,) = client.pending_events()
    assert event.type == "tls_pin_mismatch"
    assert event.details == {"host": "127.0.0.1", "observed_pin": ca_certs.pin}


def test_a_changed_server_key_is_refused_and_reported_on_the_next_good_connection(
    tls_server: ServerProcess, ca_certs: CertFiles, tmp_path: Path
) -> None:
    root = tmp_path / "phone"
    enrolled(tls_server, root, pins=[ca_certs.pin])
    config_path = root / "client.json"
    good = config_path.read_bytes()
    # The device now pins a key the server does not have (as after a MitM or a key swap).
    document = json.loads(good)
    document["enrollment"]["pins"] = [WRONG_PIN]
    write_private_bytes(config_path, json.dumps(document).encode())
    with pytest.raises(TLSPinMismatchError) as caught:
        reopen(root).fetch("m1")
    assert caught.value.code == "tls_pin_mismatch"
    assert not (root / "models" / "m1.mseal").exists()
    assert list((root / "downloads").iterdir()) == []
    client = reopen(root)
    (event,) = client.pending_events()
    assert (event.type, event.details["observed_pin"]) == ("tls_pin_mismatch", ca_certs.pin)

    write_private_bytes(config_path, good)
    before = len(request_lines(tls_server))
    assert reopen(root).fetch("m1").acknowledged
    # The event is delivered on the next good connection, accepted, and leaves the outbox.
    delivered = [
        line
        for line in request_lines(tls_server)[before:]
        if line["method"] == "POST" and line["route"] == "/v1/events"
    ]
    assert [line["status"] for line in delivered] == [202]
    assert reopen(root).pending_events() == []


def test_a_server_certificate_the_device_does_not_trust_is_refused(
    tls_server: ServerProcess, tmp_path: Path
) -> None:
    other = ca_signed(tmp_path / "other-ca", "other")
    for ca in (None, other.ca):  # the system store, then an unrelated CA
        client = new_client(tmp_path / f"phone-{ca is None}")
        with pytest.raises(TLSError, match="certificate verify failed") as caught:
            client.enroll(tls_server.url, tls_server.token(), ca_file=ca)
        assert caught.value.code == "tls_error"


def test_a_self_signed_server_is_trusted_through_its_own_certificate_and_pin(
    tmp_path: Path,
) -> None:
    certs = self_signed(tmp_path / "certs")
    with run_server(
        tmp_path / "server", MODELS, tls=(certs.cert, certs.key), ca_file=certs.ca, users=2
    ) as server:
        client = enrolled(server, tmp_path / "phone", pins=[certs.pin])
        assert client.fetch("m1").acknowledged
