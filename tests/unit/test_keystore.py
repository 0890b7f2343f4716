"""Device keystores: FileKeystore (passphrase or OS keyring) and PKCS11Keystore (SoftHSM2).

The keyring tests use a real ``keyring`` backend class that keeps secrets in a dict in
this process (no OS keyring runs here); it is a backend, not a mock of modelseal, and
goes through the same ``KeyringBackend`` API as Keychain or Secret Service.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from keyring.backend import KeyringBackend
from keyring.backends import fail, null
from keyring.compat import properties
from pkcs11 import Attribute, ObjectClass

from modelseal.client import (
    FileKeystore,
    KeyExistsError,
    KeyKind,
    KeyNotFoundError,
    KeyringMasterKey,
    KeyringUnavailableError,
    Keystore,
    KeystoreError,
    KeystoreIntegrityError,
    KeystoreLockedError,
    Passphrase,
    PKCS11Keystore,
)
from modelseal.client.keystore import DeviceKey
from modelseal.envelope import AtRest, Claims, IssueTo, OpenPolicy, open_bytes, seal_bytes
from modelseal.errors import DEKUnwrapError, KeyFormatError, RecipientMismatchError, UsageError
from modelseal.keys import (
    KEK,
    KEM,
    IssuerKeySet,
    IssuerPrivateKey,
    RecipientPrivateKey,
    SignatureAlgorithm,
)
from modelseal.keys.pkcs11 import Token

NOW = 1_800_000_000
PASSPHRASE = "correct horse battery staple"
CLAIMS = Claims(
    iss="issuer", sub="user-1", aud="device-1", mid="model-1", jti="j-1", iat=NOW, exp=NOW + 600
)


class DictKeyring(KeyringBackend):
    """An in-process keyring backend: secrets in a dict, never selected automatically."""

    @properties.classproperty
    def priority(cls) -> float:  # noqa: N805 (a class property)
        raise RuntimeError("in-process test backend")

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.entries.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.entries[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        del self.entries[(service, username)]


class PlaintextKeyring(DictKeyring):
    """Named like keyrings.alt's file backend that stores secrets in the clear."""


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _issue(device: DeviceKey, size: int = 20000) -> tuple[bytes, bytes, OpenPolicy]:
    issuer = IssuerPrivateKey.generate(SignatureAlgorithm.ES256)
    plaintext = bytes(i % 253 for i in range(size))
    package = seal_bytes(plaintext, IssueTo(device.public_key(), issuer, CLAIMS))
    policy = OpenPolicy(issuers=IssuerKeySet([issuer.public_key()]), audience="device-1", now=NOW)
    return plaintext, package, policy


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def file_keystore(key_dir: Path) -> FileKeystore:
    return FileKeystore(key_dir, Passphrase(PASSPHRASE))


@pytest.fixture(params=["file-passphrase", "file-keyring", "pkcs11"])
def keystore(request: pytest.FixtureRequest, key_dir: Path) -> Iterator[Keystore]:
    if request.param == "file-passphrase":
        yield FileKeystore(key_dir, Passphrase(PASSPHRASE))
    elif request.param == "file-keyring":
        yield FileKeystore(key_dir, KeyringMasterKey(backend=DictKeyring()))
    else:
        yield PKCS11Keystore(request.getfixturevalue("token"))


# --- behaviour every keystore shares ------------------------------------------------------------


def test_issued_package_opens_with_keystore_device_key_and_reseals_under_its_kek(
    keystore: Keystore,
) -> None:
    name, kek_name = _name("device"), _name("models")
    created = keystore.create_device_key(name)
    keystore.create_kek(kek_name)
    plaintext, package, policy = _issue(created)

    device = keystore.device_key(name)
    assert device.kid == created.kid
    assert device.public_key() == created.public_key()
    opened = open_bytes(package, device, policy)
    assert opened.plaintext == plaintext

    at_rest = seal_bytes(opened.plaintext, AtRest(keystore.kek(kek_name), opened.header.claims))
    reopened = open_bytes(at_rest, keystore.kek(kek_name), OpenPolicy(now=NOW))
    assert reopened.plaintext == plaintext
    assert reopened.header.rcpt == kek_name


def test_keys_are_never_overwritten(keystore: Keystore) -> None:
    name = _name("dup")
    first = keystore.create_device_key(name)
    keystore.create_kek(name)  # device keys and KEKs have separate namespaces
    with pytest.raises(KeyExistsError) as info:
        keystore.create_device_key(name)
    assert info.value.code == "key_exists"
    with pytest.raises(KeyExistsError):
        keystore.create_kek(name)
    assert keystore.device_key(name).kid == first.kid


def test_missing_keys_are_not_found(keystore: Keystore) -> None:
    for lookup in (keystore.device_key, keystore.kek):
        with pytest.raises(KeyNotFoundError) as info:
            lookup(_name("absent"))
        assert info.value.code == "key_not_found"


def test_listing_shows_keys_and_deleting_forgets_them(keystore: Keystore) -> None:
    name, kek_name = _name("listed"), _name("listed-kek")
    device = keystore.create_device_key(name)
    keystore.create_kek(kek_name)
    listed = {(info.kind, info.name): info for info in keystore.list_keys()}
    assert listed[(KeyKind.DEVICE, name)].kid == device.kid
    assert listed[(KeyKind.DEVICE, name)].kem is KEM.P256
    assert listed[(KeyKind.KEK, kek_name)].kid is None

    keystore.delete(KeyKind.DEVICE, name)
    keystore.delete(KeyKind.KEK, kek_name)
    remaining = {(info.kind, info.name) for info in keystore.list_keys()}
    assert (KeyKind.DEVICE, name) not in remaining
    assert (KeyKind.KEK, kek_name) not in remaining
    with pytest.raises(KeyNotFoundError):
        keystore.device_key(name)
    with pytest.raises(KeyNotFoundError) as info:
        keystore.delete(KeyKind.KEK, kek_name)
    assert info.value.code == "key_not_found"


def test_package_for_another_keystore_key_is_refused(keystore: Keystore) -> None:
    mine = keystore.create_device_key(_name("mine"))
    other = keystore.create_device_key(_name("other"))
    _, package, policy = _issue(mine)
    with pytest.raises(RecipientMismatchError) as info:
        open_bytes(package, other, policy)
    assert info.value.code == "recipient_mismatch"


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "-x", "a b", "x" * 65, "ké"])
def test_unsafe_key_names_are_refused(keystore: Keystore, name: str) -> None:
    with pytest.raises(KeystoreError) as info:
        keystore.create_kek(name)
    assert info.value.code == "keystore_error"


# --- FileKeystore -------------------------------------------------------------------------------


@pytest.mark.parametrize("kem", list(KEM))
def test_file_keystore_device_keys_of_every_kem_survive_a_restart(key_dir: Path, kem: KEM) -> None:
    created = FileKeystore(key_dir, Passphrase(PASSPHRASE)).create_device_key("device", kem)
    plaintext, package, policy = _issue(created, size=100)
    reopened = FileKeystore(key_dir, Passphrase(PASSPHRASE)).device_key("device")
    assert isinstance(reopened, RecipientPrivateKey)
    assert reopened.secret_bytes() == created.secret_bytes()
    assert open_bytes(package, reopened, policy).plaintext == plaintext


def test_file_keystore_wrong_passphrase_is_refused(key_dir: Path) -> None:
    FileKeystore(key_dir, Passphrase(PASSPHRASE)).create_kek("models")
    locked = FileKeystore(key_dir, Passphrase(PASSPHRASE + "!"))
    with pytest.raises(KeystoreLockedError, match="wrong passphrase") as info:
        locked.kek("models")
    assert info.value.code == "keystore_locked"


def test_file_keystore_passphrase_is_unicode_normalised(key_dir: Path) -> None:
    composed, decomposed = "caf\u00e9 au lait", "cafe\u0301 au lait"
    kek = FileKeystore(key_dir, Passphrase(composed)).create_kek("models")
    again = FileKeystore(key_dir, Passphrase(decomposed)).kek("models")
    assert again.secret_bytes() == kek.secret_bytes()


def _edit(path: Path, change: Any) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def _flip_ct(document: dict[str, Any]) -> None:
    raw = bytearray(base64.urlsafe_b64decode(document["ct"] + "=="))
    raw[0] ^= 1
    document["ct"] = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()


def test_file_keystore_altered_ciphertext_is_refused_as_integrity_failure(
    file_keystore: FileKeystore, key_dir: Path
) -> None:
    file_keystore.create_kek("models")
    _edit(key_dir / "kek.models.json", _flip_ct)
    with pytest.raises(KeystoreIntegrityError) as info:
        file_keystore.kek("models")
    assert info.value.code == "keystore_integrity_failed"


def test_file_keystore_swapped_public_key_is_refused_as_integrity_failure(
    file_keystore: FileKeystore, key_dir: Path
) -> None:
    file_keystore.create_device_key("device")
    stranger = file_keystore.create_device_key("stranger")
    stranger_public = json.loads((key_dir / "device.stranger.json").read_text())["public"]
    _edit(key_dir / "device.device.json", lambda doc: doc.update(public=stranger_public))
    with pytest.raises(KeystoreIntegrityError):
        file_keystore.device_key("device")
    # The listing reads the unauthenticated member; opening is what authenticates it.
    listed = {info.name: info.kid for info in file_keystore.list_keys()}
    assert listed["device"] == stranger.kid


def test_file_keystore_file_renamed_to_another_key_is_refused(
    file_keystore: FileKeystore, key_dir: Path
) -> None:
    file_keystore.create_kek("old")
    os.rename(key_dir / "kek.old.json", key_dir / "kek.new.json")
    with pytest.raises(KeyFormatError, match="names another key") as info:
        file_keystore.kek("new")
    assert info.value.code == "key_invalid"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "JSON object"),
        (b'{"v": 1, "v": 1}', "duplicate member"),
        (b'{"v": 1}', "must have members"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_file_keystore_malformed_file_is_refused(
    file_keystore: FileKeystore, key_dir: Path, content: bytes, match: str
) -> None:
    path = key_dir / "kek.models.json"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeyFormatError, match=match) as info:
        file_keystore.kek("models")
    assert info.value.code == "key_invalid"


def test_file_keystore_refuses_scrypt_cost_from_a_file_beyond_bounds(
    file_keystore: FileKeystore, key_dir: Path
) -> None:
    # Checked before any derivation: a planted file cannot make the device allocate 1 TiB.
    file_keystore.create_kek("models")
    for n, match in [(2**30, "128\\*n\\*r"), (2**10, "power of two"), (3 * 2**15, "power of two")]:
        _edit(key_dir / "kek.models.json", lambda doc, n=n: doc["kdf"].update(n=n))
        with pytest.raises(KeyFormatError, match=match):
            file_keystore.kek("models")


def test_file_keystore_altered_cost_reads_as_a_wrong_secret(
    file_keystore: FileKeystore, key_dir: Path
) -> None:
    file_keystore.create_kek("models")
    _edit(key_dir / "kek.models.json", lambda doc: doc["kdf"].update(n=2**14))
    with pytest.raises(KeystoreLockedError):
        file_keystore.kek("models")


def test_file_keystore_files_and_directory_are_private(
    file_keystore: FileKeystore, key_dir: Path
) -> None:
    file_keystore.create_device_key("device")
    file_keystore.create_kek("models")
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    files = sorted(key_dir.iterdir())
    assert [f.name for f in files] == ["device.device.json", "kek.models.json"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_file_keystore_directory_is_created_private_despite_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o000)
    try:
        FileKeystore(tmp_path / "a" / "keys", Passphrase(PASSPHRASE))
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "a" / "keys").stat().st_mode) == 0o700


def test_file_keystore_refuses_a_directory_open_to_others(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(KeystoreError, match="open to other users") as info:
        FileKeystore(shared, Passphrase(PASSPHRASE))
    assert info.value.code == "keystore_error"


def test_file_keystore_refuses_a_key_file_open_to_others(
    file_keystore: FileKeystore, key_dir: Path
) -> None:
    file_keystore.create_kek("models")
    (key_dir / "kek.models.json").chmod(0o644)
    with pytest.raises(KeystoreError, match="open to other users"):
        file_keystore.kek("models")


def test_file_keystore_refuses_a_symlinked_key_file(
    file_keystore: FileKeystore, key_dir: Path, tmp_path: Path
) -> None:
    file_keystore.create_kek("real")
    (key_dir / "kek.models.json").symlink_to(key_dir / "kek.real.json")
    with pytest.raises(KeystoreError, match="cannot open") as info:
        file_keystore.kek("models")
    assert info.value.code == "keystore_error"


def _encodings(secret: bytes) -> list[bytes]:
    b64 = base64.b64encode(secret)
    b64u = base64.urlsafe_b64encode(secret)
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        b64,
        b64.rstrip(b"="),
        b64u,
        b64u.rstrip(b"="),
        # A 24-byte window survives any alignment of the secret in a base64 stream.
        secret[4:28],
    ]


@pytest.mark.parametrize("source", ["passphrase", "keyring"])
def test_file_keystore_writes_no_key_material_in_the_clear(key_dir: Path, source: str) -> None:
    backend = DictKeyring()
    secret_source = (
        Passphrase(PASSPHRASE) if source == "passphrase" else KeyringMasterKey(backend=backend)
    )
    keystore = FileKeystore(key_dir, secret_source)
    secrets = [
        keystore.create_device_key("p256", KEM.P256).secret_bytes(),
        keystore.create_device_key("x25519", KEM.X25519).secret_bytes(),
        keystore.create_kek("models").secret_bytes(),
    ]
    secrets += [base64.urlsafe_b64decode(v + "=") for v in backend.entries.values()]
    if source == "passphrase":
        secrets.append(PASSPHRASE.encode())
    on_disk = b"".join(p.read_bytes() for p in key_dir.rglob("*") if p.is_file())
    assert on_disk
    for secret in secrets:
        for encoding in _encodings(secret):
            assert encoding not in on_disk


def test_file_keystore_leaves_no_temporary_files(
    file_keystore: FileKeystore, key_dir: Path
) -> None:
    file_keystore.create_kek("models")
    with pytest.raises(KeyExistsError):
        # The fast existence check is bypassed to exercise the hard-link race path.
        file_keystore._write_new("kek.models.json", b"{}", KeyKind.KEK, "models")
    assert sorted(p.name for p in key_dir.iterdir()) == ["kek.models.json"]


def test_passphrase_refuses_empty_and_weak_settings() -> None:
    for kwargs in [
        {"passphrase": ""},
        {"passphrase": "x", "n": 2**13},
        {"passphrase": "x", "p": 0},
    ]:
        with pytest.raises(UsageError) as info:
            Passphrase(**kwargs)
        assert info.value.code == "usage_error"
    assert PASSPHRASE not in repr(Passphrase(PASSPHRASE))


# --- keyring master key -------------------------------------------------------------------------


def test_keyring_master_key_round_trip_and_restart(key_dir: Path) -> None:
    backend = DictKeyring()
    kek = FileKeystore(key_dir, KeyringMasterKey(backend=backend)).create_kek("models")
    (stored,) = backend.entries.values()
    assert len(base64.urlsafe_b64decode(stored + "=")) == 32
    again = FileKeystore(key_dir, KeyringMasterKey(backend=backend)).kek("models")
    assert again.secret_bytes() == kek.secret_bytes()
    assert json.loads((key_dir / "kek.models.json").read_text())["kdf"]["alg"] == "keyring"


def test_keyring_with_another_master_key_is_refused(key_dir: Path) -> None:
    FileKeystore(key_dir, KeyringMasterKey(backend=DictKeyring())).create_kek("models")
    other = DictKeyring()
    other.set_password(
        "modelseal", "keystore-master-key", base64.urlsafe_b64encode(bytes(32))[:43].decode()
    )
    with pytest.raises(KeystoreLockedError) as info:
        FileKeystore(key_dir, KeyringMasterKey(backend=other)).kek("models")
    assert info.value.code == "keystore_locked"


def test_keyring_without_the_master_key_is_refused(key_dir: Path) -> None:
    FileKeystore(key_dir, KeyringMasterKey(backend=DictKeyring())).create_kek("models")
    with pytest.raises(KeystoreLockedError, match="no master key") as info:
        FileKeystore(key_dir, KeyringMasterKey(backend=DictKeyring())).kek("models")
    assert info.value.code == "keystore_locked"


def test_keys_sealed_by_one_source_are_locked_to_the_other(key_dir: Path) -> None:
    FileKeystore(key_dir, KeyringMasterKey(backend=DictKeyring())).create_kek("models")
    with pytest.raises(KeystoreLockedError, match="kdf 'keyring'"):
        FileKeystore(key_dir, Passphrase(PASSPHRASE)).kek("models")
    with pytest.raises(KeystoreLockedError):
        FileKeystore(key_dir, KeyringMasterKey("other-app", backend=DictKeyring())).kek("models")


@pytest.mark.parametrize("backend", [fail.Keyring(), null.Keyring(), PlaintextKeyring()])
def test_keyring_backends_that_cannot_keep_secrets_are_refused(backend: KeyringBackend) -> None:
    with pytest.raises(KeyringUnavailableError) as info:
        KeyringMasterKey(backend=backend)
    assert info.value.code == "keyring_unavailable"


# --- PKCS11Keystore -----------------------------------------------------------------------------


def test_pkcs11_keystore_keys_never_leave_the_token(token: Token) -> None:
    keystore = PKCS11Keystore(token)
    name = _name("hw")
    keystore.create_device_key(name)
    keystore.create_kek(name)
    with token.session() as session:
        for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.SECRET_KEY):
            obj = session.get_key(object_class, label=name)
            assert obj[Attribute.SENSITIVE] is True
            assert obj[Attribute.EXTRACTABLE] is False
            assert obj[Attribute.NEVER_EXTRACTABLE] is True
            with pytest.raises(pkcs11.AttributeSensitive):
                obj[Attribute.VALUE]


@pytest.mark.parametrize("kem", [KEM.X25519, KEM.XWING])
def test_pkcs11_keystore_refuses_kems_hardware_does_not_hold(token: Token, kem: KEM) -> None:
    with pytest.raises(UsageError, match="p256") as info:
        PKCS11Keystore(token).create_device_key(_name("soft"), kem)
    assert info.value.code == "usage_error"


def test_pkcs11_keystore_at_rest_package_under_another_kek_fails_dek_unwrap(token: Token) -> None:
    name = _name("models")
    token_kek = PKCS11Keystore(token).create_kek(name)
    package = seal_bytes(b"model", AtRest(KEK.generate(name), CLAIMS))
    with pytest.raises(DEKUnwrapError) as info:
        open_bytes(package, token_kek, OpenPolicy(now=NOW))
    assert info.value.code == "dek_unwrap_failed"
