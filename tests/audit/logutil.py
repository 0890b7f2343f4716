"""Build signed in-memory audit logs for the tamper tests (no database)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from modelseal.audit.checkpoint import Checkpoint, sign_checkpoint
from modelseal.audit.entry import GENESIS_PREV, AuditEntry
from modelseal.audit.merkle import leaf_hash, root_hash
from modelseal.audit.note import Ed25519NoteSigner, NoteVerifier, parse_verifier_key
from modelseal.audit.verify import StoredEntry, load_checkpoints

ORIGIN = "test.example/audit"
ACTIONS = ("device.registered", "iml.requested", "iml.issued", "link.created", "issuance.acked")


def make_entry(seq: int, prev: str) -> AuditEntry:
    """A varied, realistic entry (nullable members null on some entries)."""
    return AuditEntry(
        seq=seq,
        time=1_767_225_600 + seq * 7,
        action=ACTIONS[seq % len(ACTIONS)],
        actor=f"user:{seq % 17}" if seq % 5 else "system",
        prev=prev,
        user_id=seq % 17 if seq % 11 else None,
        device_id=f"device-{seq % 23}" if seq % 3 else None,
        model_id="m1" if seq % 2 else None,
        details={"jti": f"{seq:032x}", "size": 1000 + seq, "tags": ["a", seq]},
    )


def chain(entries: Sequence[AuditEntry]) -> list[AuditEntry]:
    """Renumber from 0 and recompute every ``prev`` (what an insider would do)."""
    result: list[AuditEntry] = []
    prev = GENESIS_PREV
    for seq, entry in enumerate(entries):
        fixed = replace(entry, seq=seq, prev=prev)
        result.append(fixed)
        prev = fixed.leaf_hash().hex()
    return result


def rows_of(entries: Sequence[AuditEntry]) -> list[StoredEntry]:
    return [StoredEntry(e.seq, e.to_bytes()) for e in entries]


@dataclass
class SignedLog:
    entries: list[AuditEntry]
    rows: list[StoredEntry]
    notes: list[tuple[str, bytes]]
    verifier: NoteVerifier
    checkpoints: tuple[Checkpoint, ...]


def build_log(size: int, every: int) -> SignedLog:
    """``size`` entries with a signed checkpoint every ``every`` entries and at the end."""
    entries = chain([make_entry(i, GENESIS_PREV) for i in range(size)])
    rows = rows_of(entries)
    leaves = [leaf_hash(r.data) for r in rows]
    signer = Ed25519NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
    verifier = parse_verifier_key(signer.verifier_key())
    sizes = sorted({*range(every, size + 1, every), size})
    notes = [
        (f"cp{n}", sign_checkpoint(Checkpoint(ORIGIN, n, root_hash(leaves[:n])), [signer]))
        for n in sizes
    ]
    checkpoints = load_checkpoints(notes, [verifier], ORIGIN)
    return SignedLog(entries, rows, notes, verifier, checkpoints)


def modified(entry: AuditEntry, field: str) -> StoredEntry:
    """``entry`` with one member changed, still canonical JSON (chain not recomputed)."""
    value: dict[str, Any] = entry.to_json()
    old = value[field]
    if field == "details":
        value[field] = {**old, "size": old["size"] + 1}
    elif field == "prev":
        value[field] = ("1" if old[0] == "0" else "0") + old[1:]
    elif isinstance(old, bool) or old is None:
        value[field] = 1 if field == "user_id" else "forged"
    elif isinstance(old, int):
        value[field] = old + 1
    else:
        value[field] = old + "x"
    from modelseal.audit.canonical import canonical_json

    return StoredEntry(entry.seq, canonical_json(value))


FIELDS = (
    "action",
    "actor",
    "details",
    "device_id",
    "model_id",
    "prev",
    "seq",
    "time",
    "user_id",
    "v",
)
