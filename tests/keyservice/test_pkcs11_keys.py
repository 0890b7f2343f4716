"""The key service on a SoftHSM2 token: keys made there, never extractable, used there.

Covers every purpose (issuer, link, checkpoint), the whole issuance flow with the
issuer key on the token, link tokens under a token HMAC key, and what must never
leak (PIN, key material) into logs or the database.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, ObjectClass
from sqlalchemy import text

from modelseal.audit.note import note_signer_for, open_note, parse_verifier_key, sign_note
from modelseal.errors import ModelSealError
from modelseal.keys import SignatureAlgorithm, parse_jwks
from modelseal.keys.pkcs11 import Token
from modelseal.server.errors import ConfigurationError
from modelseal.server.keyservice import KeyPurpose, KeyState, KeyUnsupportedError
from modelseal.server.keyservice.pkcs11 import PKCS11Backend
from modelseal.server.settings import load_settings
from tests.server.conftest import Harness, make_settings, start
from tests.softhsm import SoftHSM

from .conftest import KEYS_TOKEN, pkcs11_keys

ACTOR = "test"


def token_objects(hsm: SoftHSM, id_bytes: bytes) -> list[Any]:
    """Every object on the test token whose CKA_ID is ``id_bytes`` (with attributes read)."""
    with Token(hsm.module, KEYS_TOKEN, hsm.user_pin) as token, token.session() as session:
        found = []
        for obj in session.get_objects({Attribute.ID: id_bytes}):
            entry: dict[str, Any] = {"class": obj[Attribute.CLASS]}
            if entry["class"] in (ObjectClass.PRIVATE_KEY, ObjectClass.SECRET_KEY):
                entry["sensitive"] = obj[Attribute.SENSITIVE]
                entry["extractable"] = obj[Attribute.EXTRACTABLE]
                entry["private"] = obj[Attribute.PRIVATE]
                entry["token"] = obj[Attribute.TOKEN]
                try:
                    obj[Attribute.VALUE]
                except pkcs11.AttributeSensitive:
                    entry["value"] = "refused"
                else:
                    entry["value"] = "READABLE"
            found.append(entry)
        return found


def test_every_purpose_gets_a_key_generated_on_the_token_that_cannot_leave_it(
    pkcs11_server: Harness, hsm: SoftHSM
) -> None:
    keys = pkcs11_server.services.keys
    infos = {info.purpose: info for info in keys.list_keys()}
    assert set(infos) == {KeyPurpose.ISSUER, KeyPurpose.LINK, KeyPurpose.CHECKPOINT}
    for purpose, info in infos.items():
        assert info.backend == "pkcs11"
        assert info.state is KeyState.ACTIVE
        assert info.alg == ("HS256" if purpose is KeyPurpose.LINK else "ES256")
        objects = token_objects(hsm, bytes.fromhex(info.kid))
        secret = [o for o in objects if o["class"] != ObjectClass.PUBLIC_KEY]
        assert len(secret) == 1, (purpose, objects)
        assert secret[0] == {
            "class": ObjectClass.SECRET_KEY
            if purpose is KeyPurpose.LINK
            else ObjectClass.PRIVATE_KEY,
            "sensitive": True,
            "extractable": False,
            "private": True,
            "token": True,
            "value": "refused",
        }
    # No key file was written: the keys exist only on the token.
    assert list(pkcs11_server.settings.data_dir.rglob("*.jwk")) == []


def test_the_token_issuer_key_signs_and_pyca_verifies_the_signature(
    pkcs11_server: Harness,
) -> None:
    signer = pkcs11_server.services.keys.issuer_signer()
    assert signer.alg is SignatureAlgorithm.ES256
    message = b"modelseal/1 sig" + b"\x00" * 40
    signature = signer.sign(message)
    assert len(signature) == 64
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), signer.public_key().raw)
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    public.verify(der, message, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        public.verify(der, message + b"x", ec.ECDSA(hashes.SHA256()))
    # The JWKS serves exactly this public key.
    (served,) = parse_jwks(pkcs11_server.jwks()).values()
    assert served == signer.public_key()


def test_the_whole_issuance_flow_runs_with_the_issuer_key_on_the_token(
    pkcs11_server: Harness, hsm: SoftHSM
) -> None:
    server = pkcs11_server
    token = server.user("alice")
    device = server.register(token, "phone")
    job = server.issue(token, device, "m1")
    response = server.client.get(job["download_url"], headers=server.auth(token, "phone"))
    assert response.status_code == 200, response.text
    opened = server.open(response.content, device)
    sig = opened.header.sig
    assert sig is not None
    assert sig.alg is SignatureAlgorithm.ES256
    assert sig.kid == server.services.keys.issuer_signer().kid
    assert opened.header.claims is not None
    assert opened.header.claims.aud == "phone"
    # The signing key is the token's: its CKA_ID is the kid, and it is not extractable.
    objects = token_objects(hsm, bytes.fromhex(sig.kid))
    assert {"class": ObjectClass.PRIVATE_KEY, "extractable": False}.items() <= next(
        o for o in objects if o["class"] == ObjectClass.PRIVATE_KEY
    ).items()


def flip(text_: str, index: int) -> str:
    return text_[:index] + ("A" if text_[index] != "A" else "B") + text_[index + 1 :]


def forged_links(url: str) -> list[str]:
    """The link with a payload character flipped, a MAC character flipped, and a
    payload rewritten (later expiry) without the key."""
    prefix, link = url.rsplit("/", 1)
    payload, mac = link.split(".")
    document = json.loads(base64.urlsafe_b64decode(payload + "=="))
    document["exp"] += 3600
    body = base64.urlsafe_b64encode(json.dumps(document, separators=(",", ":")).encode())
    return [
        f"{prefix}/{flip(payload, 5)}.{mac}",
        f"{prefix}/{payload}.{flip(mac, 5)}",
        f"{prefix}/{body.rstrip(b'=').decode()}.{mac}",
    ]


def test_links_signed_with_the_token_key_work_and_tampered_ones_fail(
    pkcs11_server: Harness,
) -> None:
    server = pkcs11_server
    token = server.user("alice")
    device = server.register(token, "phone")
    url = server.issue(token, device, "m1")["download_url"]
    assert server.client.get(url, headers=server.auth(token, "phone")).status_code == 200
    # Each forgery from a user of its own: the fraud engine blocks a user who tampers.
    for index, forged in enumerate(forged_links(url)):
        name = f"mallory{index}"
        other = server.user(name)
        server.register(other, "phone")
        response = server.client.get(forged, headers=server.auth(other, "phone"))
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "link_invalid"


def test_a_link_key_rotation_keeps_outstanding_links_and_a_revocation_kills_them(
    pkcs11_server: Harness,
) -> None:
    server = pkcs11_server
    keys = server.services.keys
    token = server.user("alice")
    device = server.register(token, "phone")
    first = server.issue(token, device, "m1")["download_url"]
    old = keys.signer if False else keys.link_keys()[0].kid
    new = keys.rotate(KeyPurpose.LINK, actor=ACTOR)
    assert keys.link_keys()[0].kid == new.kid
    # Minted under the old key, still retiring: it verifies.
    assert server.client.get(first, headers=server.auth(token, "phone")).status_code == 200
    second = server.issue(token, device, "m1")["download_url"]
    keys.rotate(KeyPurpose.LINK, actor=ACTOR)
    keys.revoke(KeyPurpose.LINK, new.kid, actor=ACTOR, reason="test")
    response = server.client.get(second, headers=server.auth(token, "phone"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "link_invalid"
    states = {info.kid: info.state for info in keys.list_keys(KeyPurpose.LINK)}
    assert states[old] is KeyState.RETIRING
    assert states[new.kid] is KeyState.REVOKED


def test_revoking_a_token_key_destroys_it_on_the_token(
    pkcs11_server: Harness, hsm: SoftHSM
) -> None:
    keys = pkcs11_server.services.keys
    created = keys.create(KeyPurpose.ISSUER, actor=ACTOR)
    assert len(token_objects(hsm, bytes.fromhex(created.kid))) == 2
    assert created.kid in {k["kid"] for k in pkcs11_server.jwks()["keys"]}
    keys.revoke(KeyPurpose.ISSUER, created.kid, actor=ACTOR, reason="suspected compromise")
    assert token_objects(hsm, bytes.fromhex(created.kid)) == []
    document = pkcs11_server.jwks()
    assert created.kid not in {k["kid"] for k in document["keys"]}
    assert created.kid in document["revoked"]


def test_ed25519_is_refused_on_the_token(pkcs11_server: Harness) -> None:
    with pytest.raises(KeyUnsupportedError, match="ES256 only") as caught:
        pkcs11_server.services.keys.create(KeyPurpose.ISSUER, "Ed25519", actor=ACTOR)
    assert caught.value.code == "key_unsupported"


def test_the_checkpoint_note_signer_uses_the_token_key(pkcs11_server: Harness) -> None:
    signer = note_signer_for("modelseal.test/log", pkcs11_server.services.keys.checkpoint_signer())
    note = sign_note("modelseal.test/log\n1\nAAAA\n", [signer])
    verifier = parse_verifier_key(signer.verifier_key())
    assert open_note(note, [verifier]).text == "modelseal.test/log\n1\nAAAA\n"
    tampered = note.replace(b"\n1\n", b"\n2\n")
    with pytest.raises(ModelSealError):
        open_note(tampered, [verifier])


def test_a_wrong_pin_is_refused_without_being_shown(tmp_path: Path, hsm: SoftHSM) -> None:
    wrong = "wrong-pin-5521"
    settings = make_settings(
        tmp_path / "data", keys=pkcs11_keys(hsm, "modelseal-keys-http", pkcs11_pin=wrong)
    )
    from modelseal.server.container import build_services

    with pytest.raises(ConfigurationError) as caught:
        build_services(settings)
    assert "token_login_failed" in caught.value.message
    assert wrong not in caught.value.message
    assert wrong not in repr(settings)


def test_the_pin_can_come_from_a_file(tmp_path: Path, hsm: SoftHSM) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(hsm.user_pin + "\n")
    pin_file.chmod(0o644)
    loose = load_settings(
        data_dir=tmp_path / "d",
        keys={**pkcs11_keys(hsm), "pkcs11_pin": None, "pkcs11_pin_file": pin_file},
    )
    from modelseal.server.keyservice import read_pin

    with pytest.raises(ConfigurationError, match="chmod 600") as caught:
        read_pin(loose.keys)
    assert hsm.user_pin not in caught.value.message
    pin_file.chmod(0o600)
    keys = pkcs11_keys(hsm)
    del keys["pkcs11_pin"]
    settings = load_settings(data_dir=tmp_path / "d", keys={**keys, "pkcs11_pin_file": pin_file})
    assert read_pin(settings.keys) == hsm.user_pin
    backend = PKCS11Backend(hsm.module, KEYS_TOKEN, read_pin(settings.keys))
    backend.close()


@pytest.mark.parametrize(
    ("keys", "why"),
    [
        ({"backend": "pkcs11"}, "requires keys.pkcs11_module"),
        (
            {"backend": "pkcs11", "pkcs11_module": "/x.so", "pkcs11_token_label": "t"},
            "exactly one of keys.pkcs11_pin",
        ),
    ],
)
def test_incomplete_pkcs11_settings_are_refused(keys: dict[str, Any], why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        load_settings(keys=keys)


def test_a_link_signing_key_with_a_token_backend_is_refused(hsm: SoftHSM) -> None:
    with pytest.raises(ConfigurationError, match="link_signing_key must be unset"):
        load_settings(
            keys=pkcs11_keys(hsm),
            link_signing_key=base64.urlsafe_b64encode(bytes(range(32))).decode(),
        )


def test_production_on_a_token_needs_no_link_signing_key(hsm: SoftHSM) -> None:
    settings = load_settings(
        mode="production",
        issuer_id="https://models.example",
        behind_proxy=True,
        keys=pkcs11_keys(hsm),
    )
    assert settings.link_signing_key is None


def test_the_pin_and_key_material_never_reach_the_logs_or_the_database(
    tmp_path: Path, log_stream: io.StringIO, hsm: SoftHSM
) -> None:
    for server in start(tmp_path, log_stream, keys=pkcs11_keys(hsm)):
        token = server.user("alice")
        device = server.register(token, "phone")
        url = server.issue(token, device, "m1")["download_url"]
        link_token = url.rsplit("/", 1)[1]
        assert server.client.get(url, headers=server.auth(token, "phone")).status_code == 200
        keys = server.services.keys
        keys.rotate(KeyPurpose.ISSUER, actor=ACTOR)
        keys.rotate(KeyPurpose.LINK, actor=ACTOR)
        with server.services.engine.connect() as connection:
            dump = []
            for table in ("managed_keys", "events"):
                for row in connection.execute(text(f"SELECT * FROM {table}")):
                    dump.append(repr(tuple(row)))
        database = "\n".join(dump)
        logs = log_stream.getvalue()
        for haystack in (logs, database):
            assert hsm.user_pin not in haystack
            assert hsm.so_pin not in haystack
            assert link_token not in haystack
        assert '"d"' not in database  # no private JWK member
        # The database file itself, bytes and all.
        db_bytes = (server.settings.data_dir / "modelseal.db").read_bytes()
        assert hsm.user_pin.encode() not in db_bytes
        assert "issuer_key_rotated" in server.event_types()


def test_moving_a_server_from_local_keys_to_the_token_keeps_old_packages_verifiable(
    tmp_path: Path, log_stream: io.StringIO, hsm: SoftHSM
) -> None:
    for local in start(tmp_path, log_stream):
        token = local.user("alice")
        device = local.register(token, "phone")
        url = local.issue(token, device, "m1")["download_url"]
        before = local.client.get(url, headers=local.auth(token, "phone")).content
        old = local.services.keys.issuer_signer().kid
    for server in start(tmp_path, log_stream, keys=pkcs11_keys(hsm)):
        keys = server.services.keys
        active = {i.purpose: i for i in keys.list_keys() if i.state is KeyState.ACTIVE}
        assert {p: i.backend for p, i in active.items()} == {
            KeyPurpose.ISSUER: "pkcs11",
            KeyPurpose.LINK: "pkcs11",
            KeyPurpose.CHECKPOINT: "pkcs11",
        }
        new = active[KeyPurpose.ISSUER].kid
        # The local key retires like after any rotation: still published, still verifies.
        assert [k["kid"] for k in server.jwks()["keys"]] == [old, new]
        assert server.open(before, device).header.sig.kid == old  # type: ignore[union-attr]
        url = server.issue(token, device, "m1")["download_url"]
        after = server.client.get(url, headers=server.auth(token, "phone")).content
        assert server.open(after, device).header.sig.kid == new  # type: ignore[union-attr]
        server.clock.advance(900 + 300)
        assert old in keys.prune()
        assert not (server.settings.keyring_dir / f"{old}.jwk").exists()
        assert [k["kid"] for k in server.jwks()["keys"]] == [new]
