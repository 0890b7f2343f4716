"""C2SP signed notes and tlog checkpoints: the Go reference note, tampering, key handling."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from modelseal.audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from modelseal.audit.errors import NoteError, NoteSignatureError
from modelseal.audit.merkle import leaf_hash
from modelseal.audit.note import (
    ECDSANoteSigner,
    Ed25519NoteSigner,
    note_signer_for,
    open_note,
    parse_verifier_key,
    sign_note,
)
from modelseal.keys import IssuerPrivateKey, SignatureAlgorithm

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "data" / "audit" / "sumdb_note_vectors.json").read_text()
)
GO = VECTORS["ed25519"]


def go_signer() -> Ed25519NoteSigner:
    # PRIVATE+KEY+<name>+<id>+base64(0x01 || 32-byte seed); the base64 holds a '+'.
    _, _, name, _, encoded = GO["signer_key"].split("+", 4)
    seed = base64.b64decode(encoded)[1:]
    return Ed25519NoteSigner(name, ed25519.Ed25519PrivateKey.from_private_bytes(seed))


def test_signing_reproduces_the_go_sumdb_note_byte_for_byte() -> None:
    signer = go_signer()
    assert signer.verifier_key() == GO["verifier_key"]
    assert sign_note(GO["text"], [signer]).decode() == GO["note"]


def test_the_go_note_verifies_with_its_verifier_key() -> None:
    note = open_note(GO["note"].encode(), [parse_verifier_key(GO["verifier_key"])])
    assert note.text == GO["text"]
    assert note.verified_by == ("PeterNeumann",)


def test_a_verifier_key_with_plus_in_its_base64_parses() -> None:
    key = parse_verifier_key(VECTORS["verifier_key_with_plus_in_base64"])
    assert key.name == "TEST"
    assert str(key) == VECTORS["verifier_key_with_plus_in_base64"]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda n: n.replace("cryptography", "cryptographY"),
        lambda n: n.replace("problem is.\n\n", "problem is!\n\n"),
        lambda n: n.replace("x08go/ZJ", "x08go/ZK"),
    ],
)
def test_a_changed_note_or_signature_is_rejected(mangle: Any) -> None:
    with pytest.raises(NoteSignatureError):
        open_note(mangle(GO["note"]).encode(), [parse_verifier_key(GO["verifier_key"])])


@pytest.mark.parametrize(
    "data",
    [
        b"no signature block\n",
        b"text\n\n- PeterNeumann AAAA\n",
        b"text\n\n\xe2\x80\x94 PeterNeumann !!!!\n",
        b"text\n\n\xe2\x80\x94 PeterNeumann AAAA\n",  # shorter than a key id
        b"text\x00\n\n\xe2\x80\x94 a AAAAAAAA\n",
        b"\xff\n\n",
        b"text\n\n\xe2\x80\x94 PeterNeumann AAAAAAAA",  # no final newline
    ],
)
def test_malformed_notes_are_rejected(data: bytes) -> None:
    with pytest.raises(NoteError):
        open_note(data, [parse_verifier_key(GO["verifier_key"])])


def test_signatures_of_unknown_keys_are_ignored_but_one_known_signature_is_required() -> None:
    other = Ed25519NoteSigner("other.example/log", ed25519.Ed25519PrivateKey.generate())
    both = sign_note(GO["text"], [other, go_signer()])
    note = open_note(both, [parse_verifier_key(GO["verifier_key"])])
    assert note.verified_by == ("PeterNeumann",)
    only_other = sign_note(GO["text"], [other])
    with pytest.raises(NoteSignatureError):
        open_note(only_other, [parse_verifier_key(GO["verifier_key"])])


def test_same_name_with_another_key_is_not_trusted() -> None:
    impostor = Ed25519NoteSigner("PeterNeumann", ed25519.Ed25519PrivateKey.generate())
    with pytest.raises(NoteSignatureError):
        open_note(sign_note(GO["text"], [impostor]), [parse_verifier_key(GO["verifier_key"])])


@pytest.mark.parametrize(
    "text",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key id
        "PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong length
        "PeterNeumann+c74f20a3+A3pc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown type
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3",
    ],
)
def test_bad_verifier_keys_are_rejected(text: str) -> None:
    with pytest.raises(NoteError):
        parse_verifier_key(text)


def test_ecdsa_p256_notes_sign_as_type_2_and_verify() -> None:
    private = ec.generate_private_key(ec.SECP256R1())

    def sign_raw(message: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes

        r, s = decode_dss_signature(private.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    signer = ECDSANoteSigner("hsm.example/audit", private.public_key(), sign_raw)
    verifier = parse_verifier_key(signer.verifier_key())
    assert verifier.sig_type == 0x02
    note = sign_note("hello\n", [signer])
    assert open_note(note, [verifier]).text == "hello\n"
    with pytest.raises(NoteSignatureError):
        open_note(note.replace(b"hello", b"hellO"), [verifier])


@pytest.mark.parametrize("alg", [SignatureAlgorithm.ED25519, SignatureAlgorithm.ES256])
def test_issuer_style_signers_adapt_to_note_signers(alg: SignatureAlgorithm) -> None:
    signer = note_signer_for("example.com/audit", IssuerPrivateKey.generate(alg))
    checkpoint = Checkpoint("example.com/audit", 3, leaf_hash(b"x"))
    note = sign_checkpoint(checkpoint, [signer])
    assert open_checkpoint(note, [parse_verifier_key(signer.verifier_key())]) == checkpoint


def test_checkpoints_round_trip_and_refuse_another_origin() -> None:
    signer = Ed25519NoteSigner("example.com/audit", ed25519.Ed25519PrivateKey.generate())
    verifier = parse_verifier_key(signer.verifier_key())
    checkpoint = Checkpoint("example.com/audit", 1000, leaf_hash(b"root"), ("ext line",))
    note = sign_checkpoint(checkpoint, [signer])
    lines = note.decode().split("\n")
    assert lines[:3] == ["example.com/audit", "1000", base64.b64encode(checkpoint.root).decode()]
    assert open_checkpoint(note, [verifier], origin="example.com/audit") == checkpoint
    with pytest.raises(NoteError):
        open_checkpoint(note, [verifier], origin="other.example/audit")


@pytest.mark.parametrize(
    "text",
    [
        "origin\n01\n" + base64.b64encode(bytes(32)).decode() + "\n",  # leading zero
        "origin\n-1\n" + base64.b64encode(bytes(32)).decode() + "\n",
        "origin\n1\n" + base64.b64encode(bytes(31)).decode() + "\n",
        "origin\n1\n",
        "\n1\n" + base64.b64encode(bytes(32)).decode() + "\n",
    ],
)
def test_malformed_checkpoint_texts_are_rejected(text: str) -> None:
    with pytest.raises(NoteError):
        Checkpoint.parse(text)


def _ecdsa_signer(name: str, private: ec.EllipticCurvePrivateKey) -> ECDSANoteSigner:
    from cryptography.hazmat.primitives import hashes

    def sign_raw(message: bytes) -> bytes:
        r, s = decode_dss_signature(private.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    return ECDSANoteSigner(name, private.public_key(), sign_raw)


def test_a_relabelled_checkpoint_of_another_log_sharing_the_key_is_refused() -> None:
    # Two logs share one HSM key. A type 0x02 key ID does not cover the key name, and
    # the name on the signature line is not signed: relabelling log B's checkpoint
    # with log A's name makes A's verifier key accept the signature.
    private = ec.generate_private_key(ec.SECP256R1())
    log_a = _ecdsa_signer("a.example/audit", private)
    log_b = _ecdsa_signer("b.example/audit", private)
    assert log_a.key_id == log_b.key_id
    note = sign_checkpoint(Checkpoint("b.example/audit", 7, leaf_hash(b"b")), [log_b])
    relabelled = note.replace(b"\xe2\x80\x94 b.example/audit ", b"\xe2\x80\x94 a.example/audit ")
    trusted = [parse_verifier_key(log_a.verifier_key())]
    assert open_note(relabelled, trusted).verified_by == ("a.example/audit",)
    with pytest.raises(NoteSignatureError):
        open_checkpoint(relabelled, trusted)
    with pytest.raises(NoteError):
        open_checkpoint(relabelled, trusted, origin="a.example/audit")


def test_a_checkpoint_signed_only_by_a_key_not_named_after_its_origin_is_refused() -> None:
    witness = Ed25519NoteSigner("witness.example", ed25519.Ed25519PrivateKey.generate())
    note = sign_checkpoint(Checkpoint("example.com/audit", 2, leaf_hash(b"w")), [witness])
    with pytest.raises(NoteSignatureError):
        open_checkpoint(note, [parse_verifier_key(witness.verifier_key())])


def test_sixteen_post_quantum_sized_signatures_are_accepted() -> None:
    # c2sp.org/signed-note: accept at least 16 signatures; post-quantum ones are ~5 kB.
    signer = Ed25519NoteSigner("example.com/audit", ed25519.Ed25519PrivateKey.generate())
    note = sign_note("big\n", [signer]).decode()
    foreign = base64.b64encode(b"\x01\x02\x03\x04" + bytes(4900)).decode()
    lines = "".join(f"\u2014 witness{i}.example {foreign}\n" for i in range(15))
    data = (note + lines).encode()
    assert len(data) > 1 << 16
    verifier = parse_verifier_key(signer.verifier_key())
    assert open_note(data, [verifier]).verified_by == ("example.com/audit",)
    with pytest.raises(NoteError):
        open_note(data + f"\u2014 one.more {foreign}\n".encode(), [verifier])
