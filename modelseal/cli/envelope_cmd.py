"""``modelseal seal``, ``open`` and ``inspect``: thin shells over :mod:`modelseal.envelope`.

Files are written atomically by the envelope (a private temp file beside the
target, renamed into place once complete), so a failed ``seal`` or ``open``
leaves no output file; ``open`` in particular renames the plaintext into place
only after the final chunk has verified.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer

from modelseal.cli.claims import at_rest_claims, build_claims, missing_options, parse_claim_options
from modelseal.cli.keys_cmd import (
    check_writable_target,
    describe_key,
    read_issuer_key_set,
    read_key,
)
from modelseal.cli.output import (
    JSONFlag,
    emit_json,
    format_bytes,
    format_seconds,
    format_time,
    key_value_lines,
    print_lines,
    printable,
    progress_wanted,
    transfer_progress,
)
from modelseal.envelope import (
    DEFAULT_CTYPE,
    AtRest,
    Claims,
    Header,
    IssueTo,
    OpenPolicy,
    PackageInfo,
    RType,
    inspect,
    open_file,
    seal_file,
)
from modelseal.envelope.reader import MAX_LEEWAY_SECONDS
from modelseal.errors import KeyFormatError, UsageError
from modelseal.keys import KEK, IssuerPrivateKey, RecipientPrivateKey, RecipientPublicKey

__all__ = [
    "header_rows",
    "inspect_command",
    "open_command",
    "package_summary",
    "seal_command",
]

MAX_CTYPE_CHARS = 255


# --- Shared helpers --------------------------------------------------------------------------


def _check_output(in_path: Path, out_path: Path, *, force: bool) -> None:
    if out_path.exists() and in_path.exists() and os.path.samefile(in_path, out_path):
        raise UsageError(f"OUT must differ from IN, both are {out_path}")
    check_writable_target(out_path, force=force)


def _input_size(path: Path) -> int:
    """The input's size; raises the OSError that names the path when it is not there."""
    return os.stat(path).st_size


def _claims_rows(claims: Claims) -> list[tuple[str, str]]:
    rows = [(name, str(getattr(claims, name))) for name in ("iss", "sub", "aud", "mid", "jti")]
    rows.append(("iat", format_time(claims.iat)))
    rows.append(("exp", format_time(claims.exp)))
    if claims.lexp is not None:
        rows.append(("lexp", format_time(claims.lexp)))
    for name, value in claims.extra.items():
        rows.append((f"claim {name}", json.dumps(value, ensure_ascii=False)))
    return rows


def header_rows(header: Header) -> list[tuple[str, str]]:
    """The header as labelled rows for people (values escaped later by the table)."""
    rows = [("rtype", str(header.rtype))]
    if header.kem is not None:
        rows.append(
            ("suite", f"{header.kem.label} (kem 0x{int(header.kem):04x}), HKDF-SHA256, AES-256-GCM")
        )
    rows.append(("rcpt", header.rcpt))
    if header.sig is not None:
        rows.append(("sig", f"{header.sig.alg} kid {header.sig.kid}"))
    rows.append(("len", format_bytes(header.length)))
    rows.append(("ctype", header.ctype))
    if header.claims is not None:
        rows.extend(_claims_rows(header.claims))
    return rows


def _kem_name(header: Header) -> str | None:
    return None if header.kem is None else header.kem.label


# --- seal ------------------------------------------------------------------------------------


def seal_command(
    input_path: Annotated[Path, typer.Argument(metavar="IN", help="Plaintext model file.")],
    output_path: Annotated[Path, typer.Argument(metavar="OUT", help="Package to write.")],
    to: Annotated[
        Path,
        typer.Option(
            "--to",
            help="Device public key (PREFIX.pub.jwk) for an issued package, or a KEK JWK"
            " for an at-rest package.",
            metavar="KEY.jwk",
        ),
    ],
    issuer_key: Annotated[
        Path | None,
        typer.Option("--issuer-key", help="Issuer private key that signs.", metavar="ISSUER.jwk"),
    ] = None,
    sub: Annotated[str | None, typer.Option(help="Claim sub: pseudonymous user id.")] = None,
    aud: Annotated[str | None, typer.Option(help="Claim aud: the device id.")] = None,
    mid: Annotated[str | None, typer.Option(help="Claim mid: the model id.")] = None,
    ttl: Annotated[
        int | None,
        typer.Option(help="Delivery deadline: exp = now + TTL.", metavar="SECONDS"),
    ] = None,
    iss: Annotated[
        str | None, typer.Option(help="Claim iss. Default: the issuer key's kid.")
    ] = None,
    licence_ttl: Annotated[
        int | None,
        typer.Option("--licence-ttl", help="Licence expiry: lexp = now + TTL.", metavar="SECONDS"),
    ] = None,
    claim: Annotated[
        list[str] | None,
        typer.Option(
            "--claim",
            help="Extra claim NAME=VALUE (repeatable); JSON scalars keep their type.",
            metavar="NAME=VALUE",
        ),
    ] = None,
    ctype: Annotated[str, typer.Option(help="Media type of the plaintext.")] = DEFAULT_CTYPE,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    json_output: JSONFlag = False,
) -> None:
    """Seal a model file to a device key (signed, with claims) or under a KEK (at rest)."""
    plaintext_bytes = _input_size(input_path)
    _check_output(input_path, output_path, force=force)
    if not 1 <= len(ctype) <= MAX_CTYPE_CHARS:
        raise UsageError(f"--ctype must be 1..{MAX_CTYPE_CHARS} characters, got {len(ctype)}")
    extra = parse_claim_options(claim or [])
    recipient = read_key(to)
    destination: IssueTo | AtRest
    if isinstance(recipient, KEK):
        if issuer_key is not None:
            raise UsageError("an at-rest package (--to a KEK) is not signed; drop --issuer-key")
        claims = at_rest_claims(
            iss=iss, sub=sub, aud=aud, mid=mid, ttl=ttl, licence_ttl=licence_ttl, extra=extra
        )
        destination = AtRest(recipient, claims)
    elif isinstance(recipient, RecipientPublicKey):
        if issuer_key is None or sub is None or aud is None or mid is None or ttl is None:
            required = {"--issuer-key": issuer_key, "--sub": sub, "--aud": aud, "--mid": mid}
            raise missing_options("sealing to a device key", {**required, "--ttl": ttl})
        signer = read_key(issuer_key)
        if not isinstance(signer, IssuerPrivateKey):
            raise KeyFormatError(
                f"--issuer-key {issuer_key}: expected an issuer private key, got"
                f" {describe_key(signer)}"
            )
        claims = build_claims(
            iss=signer.kid if iss is None else iss,
            sub=sub,
            aud=aud,
            mid=mid,
            ttl_seconds=ttl,
            licence_ttl_seconds=licence_ttl,
            extra=extra,
        )
        destination = IssueTo(recipient, signer, claims)
    else:
        hint = "; pass PREFIX.pub.jwk" if isinstance(recipient, RecipientPrivateKey) else ""
        raise KeyFormatError(
            f"--to {to}: expected a device public key or a KEK, got {describe_key(recipient)}{hint}"
        )

    started = time.perf_counter()
    show = progress_wanted(plaintext_bytes, json_output=json_output)
    with transfer_progress("sealing", plaintext_bytes, enabled=show) as progress:
        result = seal_file(input_path, output_path, destination, ctype=ctype, progress=progress)
    seconds = time.perf_counter() - started

    header = result.header
    if json_output:
        emit_json(
            {
                "input": str(input_path),
                "output": str(output_path),
                "package_id": result.package_id,
                "rtype": str(header.rtype),
                "kem": _kem_name(header),
                "rcpt": header.rcpt,
                "plaintext_bytes": header.length,
                "package_bytes": result.size,
                "seconds": round(seconds, 6),
                "header": header.to_json(),
            }
        )
        return
    rows = [("package_id", result.package_id)]
    if header.kem is not None and header.sig is not None:
        rows.append(("to", f"device key {header.rcpt} ({header.kem.label})"))
        rows.append(("issuer", f"{header.sig.alg} {header.sig.kid}"))
    else:
        rows.append(("to", f"KEK {header.rcpt} (at rest, unsigned)"))
    if header.claims is not None:
        rows.extend(_claims_rows(header.claims))
    rows.append(("size", f"{format_bytes(header.length)} -> {format_bytes(result.size)}"))
    rows.append(("time", format_seconds(seconds)))
    title = f"sealed {printable(str(input_path))} -> {printable(str(output_path))}"
    print_lines([title, *key_value_lines(rows)])


# --- open ------------------------------------------------------------------------------------


def _verified_checks(header: Header) -> list[str]:
    checks = ["issuer_signature", "audience", "expiry"] if header.rtype is RType.HPKE else []
    if header.claims is not None and header.claims.lexp is not None:
        checks.append("licence")
    checks += ["recipient", "dek_unwrap", "key_commitment", "body_length", "chunks"]
    return checks


def open_command(
    input_path: Annotated[Path, typer.Argument(metavar="IN", help="Package to open.")],
    output_path: Annotated[Path, typer.Argument(metavar="OUT", help="Plaintext file to write.")],
    key: Annotated[
        Path,
        typer.Option(
            "--key", help="Device private key (PREFIX.jwk) or KEK JWK.", metavar="KEY.jwk"
        ),
    ],
    issuers: Annotated[
        Path | None,
        typer.Option(
            help="Pinned issuer keys: a JWK Set or one issuer public JWK (device key only).",
            metavar="ISSUERS.jwks",
        ),
    ] = None,
    aud: Annotated[
        str | None, typer.Option(help="This device's id, checked against aud (device key only).")
    ] = None,
    now: Annotated[
        int | None,
        typer.Option(help="Check expiry at this time instead of the clock.", metavar="UNIX"),
    ] = None,
    leeway: Annotated[
        int,
        typer.Option(
            help=f"Clock skew allowed on exp and lexp, 0..{MAX_LEEWAY_SECONDS}.",
            metavar="SECONDS",
        ),
    ] = 60,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it exists.")] = False,
    json_output: JSONFlag = False,
) -> None:
    """Verify a package and decrypt it; OUT appears only once every check has passed."""
    package_bytes = _input_size(input_path)
    _check_output(input_path, output_path, force=force)
    if now is not None and now < 0:
        raise UsageError(f"--now must be a Unix time >= 0, got {now}")
    if not 0 <= leeway <= MAX_LEEWAY_SECONDS:
        raise UsageError(f"--leeway must be 0..{MAX_LEEWAY_SECONDS} seconds, got {leeway}")
    opener = read_key(key)
    if isinstance(opener, KEK):
        if issuers is not None or aud is not None:
            raise UsageError(
                "--issuers and --aud apply to issued packages; a KEK opens at-rest packages,"
                " which are not signed"
            )
        policy = OpenPolicy(now=now, leeway_seconds=leeway)
        opening_key: RecipientPrivateKey | KEK = opener
    elif isinstance(opener, RecipientPrivateKey):
        if issuers is None or aud is None:
            raise missing_options("opening with a device key", {"--issuers": issuers, "--aud": aud})
        policy = OpenPolicy(
            issuers=read_issuer_key_set(issuers), audience=aud, now=now, leeway_seconds=leeway
        )
        opening_key = opener
    else:
        hint = (
            "; pass PREFIX.jwk, not PREFIX.pub.jwk"
            if isinstance(opener, RecipientPublicKey)
            else ""
        )
        raise KeyFormatError(
            f"--key {key}: expected a device private key or a KEK, got {describe_key(opener)}{hint}"
        )

    started = time.perf_counter()
    show = progress_wanted(package_bytes, json_output=json_output)
    total = 0
    if show:
        # The callback counts plaintext; the header says how much there will be.
        with input_path.open("rb") as src:
            total = inspect(src).header.length
    with transfer_progress("opening", total, enabled=show) as progress:
        package = open_file(input_path, output_path, opening_key, policy, progress=progress)
    seconds = time.perf_counter() - started

    header = package.header
    checks = _verified_checks(header)
    if json_output:
        emit_json(
            {
                "input": str(input_path),
                "output": str(output_path),
                "package_id": package.package_id,
                "rtype": str(header.rtype),
                "kem": _kem_name(header),
                "plaintext_bytes": package.length,
                "chunks": package.chunk_count,
                "verified": checks,
                "seconds": round(seconds, 6),
                "header": header.to_json(),
            }
        )
        return
    rows = [("package_id", package.package_id)]
    if header.sig is not None:
        rows.append(("issuer", f"{header.sig.alg} {header.sig.kid} (pinned, signature valid)"))
    if header.claims is not None:
        rows.extend(_claims_rows(header.claims))
    rows.append(("plaintext", f"{format_bytes(package.length)}, {package.chunk_count} chunks"))
    rows.append(("verified", ", ".join(checks)))
    rows.append(("time", format_seconds(seconds)))
    title = f"opened {printable(str(input_path))} -> {printable(str(output_path))}"
    print_lines([title, *key_value_lines(rows)])


# --- inspect ---------------------------------------------------------------------------------


def package_summary(info: PackageInfo, *, file_bytes: int) -> dict[str, object]:
    """What ``inspect`` reports, as JSON-ready data: header, sizes, package id. No key bytes.

    The encapsulated key, wrapped DEK and signature are reported by length only.
    """
    return {
        "verified": False,
        "package_id": info.package_id,
        "kem": _kem_name(info.header),
        "header": info.header.to_json(),
        "sizes": {
            "header_bytes": info.header_bytes,
            "enc_bytes": info.enc_bytes,
            "signature_bytes": info.signature_bytes,
            "body_offset": info.body_offset,
            "body_bytes": info.body_bytes,
            "expected_body_bytes": info.expected_body_bytes,
            "body_matches": info.body_bytes == info.expected_body_bytes,
            "total_bytes": file_bytes,
        },
    }


def inspect_command(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Package to describe.")],
    json_output: JSONFlag = False,
) -> None:
    """Describe a package from its header alone. Nothing is verified; no key is needed."""
    with file.open("rb") as src:
        info = inspect(src)
        file_bytes = os.fstat(src.fileno()).st_size
    summary = package_summary(info, file_bytes=file_bytes)
    if json_output:
        emit_json({"file": str(file), **summary})
        return
    body_note = (
        "matches len" if info.body_bytes == info.expected_body_bytes else "DOES NOT match len"
    )
    body = "unknown" if info.body_bytes is None else format_bytes(info.body_bytes)
    sizes = [
        ("header", format_bytes(info.header_bytes)),
        ("enc", format_bytes(info.enc_bytes)),
        ("signature", format_bytes(info.signature_bytes)),
        ("body", f"{body}; expected {format_bytes(info.expected_body_bytes)}, {body_note}"),
        ("total", format_bytes(file_bytes)),
    ]
    print_lines(
        [
            f"{printable(str(file))}: modelseal package, FORMAT v1",
            "  NOT VERIFIED: inspect reads the header without checking the signature or any key",
            *key_value_lines([("package_id", info.package_id), *header_rows(info.header)]),
            "sizes",
            *key_value_lines(sizes),
        ]
    )
