"""``modelseal keygen``, and reading key files given on the command line.

Key files are JWKs (``docs/KEYS.md``). A private key is written to
``PREFIX.jwk`` with mode 0600, its public half to ``PREFIX.pub.jwk``; a KEK has
no public form and gets ``PREFIX.jwk`` only. Existing files are never replaced
without ``--force``.
"""

from __future__ import annotations

import enum
import errno
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from modelseal.cli.output import (
    JSONFlag,
    emit_json,
    key_value_lines,
    print_lines,
)
from modelseal.errors import UsageError
from modelseal.keys import (
    KEK,
    KEM,
    IssuerKeySet,
    IssuerPrivateKey,
    IssuerPublicKey,
    Key,
    RecipientPrivateKey,
    RecipientPublicKey,
    SignatureAlgorithm,
    load_issuer_key_set,
    load_key,
    save_key,
)

__all__ = [
    "GeneratedKey",
    "KEMChoice",
    "check_writable_target",
    "describe_key",
    "generate_and_save",
    "keygen",
    "read_issuer_key_set",
    "read_key",
]


class KEMChoice(enum.StrEnum):
    """Device key types offered by ``keygen --kem``."""

    X25519 = "x25519"
    P256 = "p256"
    XWING = "xwing"


def _ensure_readable(path: Path) -> None:
    # The key loaders report an unreadable file as a malformed key. Opening it here
    # first lets the CLI report a missing or unreadable file as an I/O error (exit 7)
    # that names the path, and keep exit 6 for files that are there but malformed.
    with path.open("rb"):
        pass


def read_key(path: Path) -> Key:
    """Load one JWK file.

    Raises:
        OSError: The file cannot be opened.
        KeyFormatError: It is not a JWK modelseal understands.
    """
    _ensure_readable(path)
    return load_key(path)


def read_issuer_key_set(path: Path) -> IssuerKeySet:
    """Load pinned issuer keys: a JWK Set, or one issuer public JWK.

    Raises:
        OSError: The file cannot be opened.
        KeyFormatError: It holds neither.
    """
    _ensure_readable(path)
    return load_issuer_key_set(path)


def describe_key(key: Key) -> str:
    """What a key is, for error messages: ``a device private key (x25519)``."""
    if isinstance(key, KEK):
        return "a KEK"
    if isinstance(key, RecipientPrivateKey):
        return f"a device private key ({key.kem.label})"
    if isinstance(key, RecipientPublicKey):
        return f"a device public key ({key.kem.label})"
    if isinstance(key, IssuerPrivateKey):
        return f"an issuer private key ({key.alg})"
    if isinstance(key, IssuerPublicKey):
        return f"an issuer public key ({key.alg})"
    raise UsageError(f"unknown key type {type(key).__name__}")


def check_writable_target(path: Path, *, force: bool) -> None:
    """Refuse to write ``path`` if it exists (unless ``force``) or its directory is missing.

    Raises:
        FileExistsError: ``path`` exists and ``force`` is false.
        FileNotFoundError: The parent directory does not exist.
        IsADirectoryError: ``path`` is a directory.
    """
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, "directory does not exist", str(parent))
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
    if not force and os.path.lexists(path):
        raise FileExistsError(
            errno.EEXIST, "already exists (pass --force to replace it)", str(path)
        )


@dataclass(frozen=True, slots=True)
class GeneratedKey:
    """A key written to disk. Holds paths and public facts only, never the secret.

    Attributes:
        kind: ``device``, ``issuer`` or ``kek``.
        algorithm: The KEM label, signature algorithm, or ``A256GCMKW`` for a KEK.
        kid: The key id (FORMAT §6); for a KEK, its label.
        private_path: Where the private JWK was written (mode 0600).
        public_path: Where the public JWK was written; ``None`` for a KEK.
    """

    kind: str
    algorithm: str
    kid: str
    private_path: Path
    public_path: Path | None

    def to_json(self) -> dict[str, object]:
        """The JSON fields of ``keygen --json``."""
        return {
            "kind": self.kind,
            "algorithm": self.algorithm,
            "kid": self.kid,
            "private_key": str(self.private_path),
            "public_key": None if self.public_path is None else str(self.public_path),
        }


def _key_paths(prefix: Path, *, public: bool) -> tuple[Path, Path | None]:
    private = prefix.with_name(prefix.name + ".jwk")
    return private, (prefix.with_name(prefix.name + ".pub.jwk") if public else None)


def generate_and_save(
    prefix: Path,
    *,
    kem: KEM | None = None,
    issuer_alg: SignatureAlgorithm | None = None,
    kek_label: str | None = None,
    force: bool = False,
) -> GeneratedKey:
    """Generate one key of the kind selected and write its JWK file(s) under ``prefix``.

    Exactly one of ``kem``, ``issuer_alg`` and ``kek_label`` must be given. Both
    targets are checked before anything is written, so a refusal leaves no half pair.

    Raises:
        UsageError: Not exactly one kind was selected.
        FileExistsError: A target exists and ``force`` is false.
        KeyFormatError: The KEK label is malformed.
    """
    if sum(x is not None for x in (kem, issuer_alg, kek_label)) != 1:
        raise UsageError("select exactly one key kind: a KEM, an issuer algorithm or a KEK label")
    private_path, public_path = _key_paths(prefix, public=kek_label is None)
    for target in (private_path, public_path):
        if target is not None:
            check_writable_target(target, force=force)
    key: RecipientPrivateKey | IssuerPrivateKey | KEK
    if kem is not None:
        key = RecipientPrivateKey.generate(kem)
        kind, algorithm, kid = "device", kem.label, key.kid
    elif issuer_alg is not None:
        key = IssuerPrivateKey.generate(issuer_alg)
        kind, algorithm, kid = "issuer", str(issuer_alg), key.kid
    else:
        assert kek_label is not None  # exactly one kind was checked above
        key = KEK.generate(kek_label)
        kind, algorithm, kid = "kek", "A256GCMKW", key.label
    save_key(private_path, key, overwrite=force)
    if public_path is not None and not isinstance(key, KEK):
        save_key(public_path, key.public_key(), overwrite=force)
    return GeneratedKey(kind, algorithm, kid, private_path, public_path)


def keygen(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Path prefix: writes PREFIX.jwk (private, mode 0600) and PREFIX.pub.jwk.",
            metavar="PREFIX",
        ),
    ],
    kem: Annotated[
        KEMChoice | None,
        typer.Option(help="Device (recipient) key type. The default kind: x25519."),
    ] = None,
    issuer: Annotated[
        bool, typer.Option("--issuer", help="Generate an issuer signing key instead.")
    ] = False,
    alg: Annotated[
        SignatureAlgorithm | None,
        typer.Option(help="Issuer signature algorithm (with --issuer). Default Ed25519."),
    ] = None,
    kek: Annotated[
        bool, typer.Option("--kek", help="Generate a KEK for at-rest packages instead.")
    ] = False,
    label: Annotated[
        str | None,
        typer.Option(help="KEK label written to packages' rcpt (with --kek; required)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace existing key files.")] = False,
    json_output: JSONFlag = False,
) -> None:
    """Generate a device key, an issuer key or a KEK, and write it as JWK files."""
    if issuer and kek:
        raise UsageError("--issuer and --kek are mutually exclusive")
    if kem is not None and (issuer or kek):
        raise UsageError("--kem selects a device key; it cannot be combined with --issuer or --kek")
    if alg is not None and not issuer:
        raise UsageError("--alg applies to issuer keys; add --issuer")
    if label is not None and not kek:
        raise UsageError("--label applies to KEKs; add --kek")
    if kek and label is None:
        raise UsageError("--kek needs --label LABEL (1-64 printable ASCII characters)")
    if issuer:
        generated = generate_and_save(
            out, issuer_alg=alg or SignatureAlgorithm.ED25519, force=force
        )
    elif kek:
        generated = generate_and_save(out, kek_label=label, force=force)
    else:
        chosen = KEM.from_label(kem.value if kem is not None else KEMChoice.X25519.value)
        generated = generate_and_save(out, kem=chosen, force=force)
    if json_output:
        emit_json(generated.to_json())
        return
    rows = [("kid", generated.kid), ("private", f"{generated.private_path} (mode 0600)")]
    if generated.public_path is not None:
        rows.append(("public", str(generated.public_path)))
    print_lines([f"{generated.kind} key {generated.algorithm}", *key_value_lines(rows)])
