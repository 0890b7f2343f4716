"""Verify an audit log against its signed checkpoints, and offline proof bundles.

:func:`verify_log` takes the stored rows in storage order and the signed checkpoints
(from the export directory, and from the database) and checks, in this order:

1. every checkpoint carries a valid signature of a trusted checkpoint key, and no two
   checkpoints of one size name different roots;
2. each row is a canonical v1 entry whose ``seq`` is its position (catches deleted,
   inserted and reordered rows), whose indexed columns match it, and whose ``prev`` is
   the leaf hash of the entry before it (names a changed entry);
3. no checkpoint covers more entries than the log holds (truncation);
4. the first ``size`` leaves of the log hash to the root of every checkpoint
   (catches everything an insider rewrote consistently, chain included).

The first failure raises :class:`LogVerificationError` with a stable code and the
first bad entry. Without a checkpoint, only steps 2 is possible, and a consistent
rewrite of the whole log goes unnoticed: checkpoints held outside the database are
what make the log tamper-evident.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from modelseal.audit.checkpoint import Checkpoint, open_checkpoint
from modelseal.audit.entry import GENESIS_PREV, AuditEntry
from modelseal.audit.errors import (
    LOG_CHAIN_BROKEN,
    LOG_CHECKPOINT_INCONSISTENT,
    LOG_CHECKPOINT_SIGNATURE,
    LOG_COLUMN_MISMATCH,
    LOG_ENTRY_MALFORMED,
    LOG_NOT_COVERED,
    LOG_ROOT_MISMATCH,
    LOG_SEQUENCE_GAP,
    LOG_TRUNCATED,
    AuditError,
    CanonicalJSONError,
    LogVerificationError,
    NoteError,
    ProofError,
)
from modelseal.audit.merkle import (
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from modelseal.audit.note import NoteVerifier

__all__ = [
    "CONSISTENCY_FORMAT",
    "PROOF_FORMAT",
    "LogReport",
    "ProofBundle",
    "StoredEntry",
    "build_consistency_bundle",
    "build_proof_bundle",
    "load_checkpoints",
    "verify_consistency_bundle",
    "verify_entry",
    "verify_log",
    "verify_proof_bundle",
]

PROOF_FORMAT = "modelseal-audit-proof/v1"
_COLUMNS = ("action", "actor", "user_id", "device_id", "model_id", "time")


@dataclass(frozen=True, slots=True)
class StoredEntry:
    """One stored row: its sequence column, the entry bytes and its indexed columns."""

    seq: int
    data: bytes
    columns: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class LogReport:
    """The outcome of a successful verification."""

    size: int
    checkpoints: tuple[Checkpoint, ...]
    leaves: tuple[bytes, ...] = field(repr=False)

    @property
    def covered(self) -> int:
        """Entries covered by the largest checkpoint (later ones are not yet protected)."""
        return max((c.size for c in self.checkpoints), default=0)


def load_checkpoints(
    notes: Iterable[tuple[str, bytes]], verifiers: Sequence[NoteVerifier], origin: str
) -> tuple[Checkpoint, ...]:
    """Verify signed checkpoints (``(where, note bytes)`` pairs), smallest size first.

    Raises:
        LogVerificationError: A checkpoint is unsigned, badly signed, malformed, of
            another origin, or two of one size disagree.
    """
    by_size: dict[int, Checkpoint] = {}
    for where, data in notes:
        try:
            checkpoint = open_checkpoint(data, verifiers, origin=origin)
        except AuditError as exc:
            raise LogVerificationError(
                LOG_CHECKPOINT_SIGNATURE, f"checkpoint {where}: {exc.message}"
            ) from None
        known = by_size.get(checkpoint.size)
        if known is not None and not hmac.compare_digest(known.root, checkpoint.root):
            raise LogVerificationError(
                LOG_CHECKPOINT_INCONSISTENT,
                f"two signed checkpoints of size {checkpoint.size} name different roots "
                f"({where}): the log was forked or rewritten",
            )
        by_size[checkpoint.size] = checkpoint
    return tuple(by_size[size] for size in sorted(by_size))


def _chain_culprit(entries: Sequence[AuditEntry], leaves: Sequence[bytes], i: int) -> int:
    """Entry ``i`` does not link to ``i - 1``: was ``i - 1`` changed, or ``i``'s ``prev``?"""
    nxt = entries[i + 1] if i + 1 < len(entries) else None
    if nxt is not None and nxt.prev != leaves[i].hex():
        return i  # entry i itself no longer hashes to what its successor recorded
    return i - 1


def _scan(rows: Sequence[StoredEntry]) -> tuple[list[AuditEntry], list[bytes]]:
    entries: list[AuditEntry] = []
    leaves: list[bytes] = []
    for position, row in enumerate(rows):
        try:
            entry = AuditEntry.parse(row.data)
        except CanonicalJSONError as exc:
            raise LogVerificationError(
                LOG_ENTRY_MALFORMED, f"entry {position}: {exc.message}", seq=position
            ) from None
        entries.append(entry)
        leaves.append(leaf_hash(row.data))  # parse() checked the bytes are canonical
    for position, (row, entry) in enumerate(zip(rows, entries, strict=True)):
        if entry.seq != position:
            culprit = position
            # A duplicate of the previous seq: the extra row is the one nothing links to.
            before = GENESIS_PREV if position < 2 else leaves[position - 2].hex()
            if entry.seq == position - 1 and entry.prev == before:
                culprit = position - 1
            raise LogVerificationError(
                LOG_SEQUENCE_GAP,
                f"position {position} holds entry {entry.seq}: entries were deleted, "
                f"inserted or reordered (first bad entry {culprit})",
                seq=culprit,
            )
        if row.seq != entry.seq:
            raise LogVerificationError(
                LOG_COLUMN_MISMATCH,
                f"entry {position}: stored seq column {row.seq} differs from the entry",
                seq=position,
            )
        if row.columns is not None:
            for name in _COLUMNS:
                if row.columns.get(name) != getattr(entry, name):
                    raise LogVerificationError(
                        LOG_COLUMN_MISMATCH,
                        f"entry {position}: column {name} differs from the entry",
                        seq=position,
                    )
        expected = GENESIS_PREV if position == 0 else leaves[position - 1].hex()
        if entry.prev != expected:
            culprit = 0 if position == 0 else _chain_culprit(entries, leaves, position)
            raise LogVerificationError(
                LOG_CHAIN_BROKEN,
                f"entry {position} does not link to entry {position - 1} "
                f"(first bad entry {culprit})",
                seq=culprit,
            )
    return entries, leaves


def verify_log(
    rows: Sequence[StoredEntry],
    checkpoints: Sequence[Checkpoint],
    *,
    expected_size: int | None = None,
) -> LogReport:
    """Verify ``rows`` (in storage order) against verified ``checkpoints``.

    ``expected_size`` is the appender's own count of entries, if known: rows beyond it
    were not written by the appender.

    Raises:
        LogVerificationError: The first problem found, naming the first bad entry.
    """
    _entries, leaves = _scan(rows)
    size = len(leaves)
    if expected_size is not None and size < expected_size:
        raise LogVerificationError(
            LOG_TRUNCATED,
            f"the appender wrote {expected_size} entries but the log holds {size}: "
            f"entries from {size} on were removed",
            seq=size,
        )
    if expected_size is not None and size > expected_size:
        raise LogVerificationError(
            LOG_SEQUENCE_GAP,
            f"the log holds {size} entries but the appender wrote {expected_size}: "
            f"entries from {expected_size} on were inserted",
            seq=expected_size,
        )
    ordered = sorted(checkpoints, key=lambda c: c.size)
    for checkpoint in ordered:
        if checkpoint.size > size:
            raise LogVerificationError(
                LOG_TRUNCATED,
                f"a signed checkpoint covers {checkpoint.size} entries but the log holds "
                f"{size}: entries from {size} on were removed",
                seq=size,
            )
    compact = CompactRange()
    verified_size = 0
    for checkpoint in ordered:
        while compact.size < checkpoint.size:
            compact.append(leaves[compact.size])
        if not hmac.compare_digest(compact.root(), checkpoint.root):
            # The chain is intact (checked above), so a naive edit would have been named
            # already: the last entry of the interval was changed, or the interval was
            # rewritten consistently.
            first, last = verified_size, checkpoint.size - 1
            raise LogVerificationError(
                LOG_ROOT_MISMATCH,
                f"entries {first}..{last} do not match the signed checkpoint of size "
                f"{checkpoint.size}: entry {last} was changed, or entries from {first} on "
                "were rewritten",
                seq=last,
            )
        verified_size = checkpoint.size
    return LogReport(size, tuple(ordered), tuple(leaves))


# --- proof bundles ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProofBundle:
    """An entry, its inclusion proof and a signed checkpoint: verifiable offline."""

    entry: bytes
    leaf_index: int
    tree_size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes

    def to_json(self) -> str:
        """The bundle as JSON (UTF-8 text)."""
        return json.dumps(
            {
                "format": PROOF_FORMAT,
                "entry": self.entry.decode("utf-8"),
                "leaf_index": self.leaf_index,
                "tree_size": self.tree_size,
                "inclusion_proof": [base64.b64encode(h).decode("ascii") for h in self.proof],
                "checkpoint": self.checkpoint.decode("utf-8"),
            },
            indent=2,
            ensure_ascii=False,
        )


def build_proof_bundle(
    leaves: Sequence[bytes], entry: bytes, leaf_index: int, signed_checkpoint: bytes, size: int
) -> ProofBundle:
    """Bundle ``entry`` (leaf ``leaf_index``) with its proof against a checkpoint of ``size``.

    Raises:
        ValueError: ``leaf_index`` is not below ``size`` or ``size`` exceeds the leaves.
    """
    if not 0 <= leaf_index < size <= len(leaves):
        raise ValueError(f"entry {leaf_index} is not covered by a checkpoint of size {size}")
    proof = inclusion_proof(leaves[:size], leaf_index)
    return ProofBundle(entry, leaf_index, size, tuple(proof), signed_checkpoint)


def verify_proof_bundle(
    text: str | bytes, verifiers: Sequence[NoteVerifier]
) -> tuple[AuditEntry, Checkpoint]:
    """Verify a proof bundle with no database: signature, entry, inclusion.

    Raises:
        NoteError: The bundle is malformed.
        NoteSignatureError: The checkpoint is not signed by a trusted key.
        CanonicalJSONError: The entry is not a canonical v1 entry.
        ProofError: The entry is not in the checkpointed tree at ``leaf_index``.
    """
    try:
        bundle = json.loads(text)
        if not isinstance(bundle, dict) or bundle.get("format") != PROOF_FORMAT:
            raise NoteError(f"not a {PROOF_FORMAT} bundle")
        entry_bytes = str(bundle["entry"]).encode("utf-8")
        leaf_index = bundle["leaf_index"]
        tree_size = bundle["tree_size"]
        proof = [base64.b64decode(h, validate=True) for h in bundle["inclusion_proof"]]
        note = str(bundle["checkpoint"]).encode("utf-8")
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise NoteError("proof bundle is malformed") from None
    if not isinstance(leaf_index, int) or not isinstance(tree_size, int):
        raise NoteError("proof bundle: leaf_index and tree_size must be integers")
    checkpoint = open_checkpoint(note, verifiers)
    entry = AuditEntry.parse(entry_bytes)
    if entry.seq != leaf_index:
        raise ProofError("entry seq differs from the proven leaf index")
    if checkpoint.size != tree_size:
        raise ProofError("proof tree size differs from the checkpoint")
    verify_inclusion(entry.leaf_hash(), leaf_index, tree_size, proof, checkpoint.root)
    return entry, checkpoint


def verify_entry(
    rows: Sequence[StoredEntry], checkpoints: Sequence[Checkpoint], seq: int
) -> tuple[AuditEntry, tuple[Checkpoint, ...]]:
    """Verify one entry: well-formed, in place, and included in every checkpoint covering it.

    Inclusion proofs are built from the stored leaves; a proof verifies only if entry
    ``seq`` is byte-for-byte what the signed checkpoints committed to.

    Returns:
        The entry and the checkpoints that prove it.

    Raises:
        LogVerificationError: The entry is missing, malformed, out of place, not in a
            checkpoint's tree (``audit_root_mismatch``), or not covered yet
            (``audit_not_covered``).
    """
    position = next((i for i, row in enumerate(rows) if row.seq == seq), None)
    if position is None:
        raise LogVerificationError(LOG_SEQUENCE_GAP, f"entry {seq} is missing", seq=seq)
    try:
        entry = AuditEntry.parse(rows[position].data)
    except CanonicalJSONError as exc:
        raise LogVerificationError(
            LOG_ENTRY_MALFORMED, f"entry {seq}: {exc.message}", seq=seq
        ) from None
    if entry.seq != seq or position != seq:
        raise LogVerificationError(
            LOG_SEQUENCE_GAP, f"entry {seq} is stored at position {position}", seq=seq
        )
    leaves = [leaf_hash(row.data) for row in rows]
    covering = tuple(c for c in sorted(checkpoints, key=lambda c: c.size) if c.size > seq)
    if not covering:
        raise LogVerificationError(
            LOG_NOT_COVERED, f"entry {seq} is not covered by a signed checkpoint yet", seq=seq
        )
    for checkpoint in covering:
        if checkpoint.size > len(leaves):
            raise LogVerificationError(
                LOG_TRUNCATED,
                f"a signed checkpoint covers {checkpoint.size} entries but the log holds "
                f"{len(leaves)}",
                seq=len(leaves),
            )
        proof = inclusion_proof(leaves[: checkpoint.size], seq)
        try:
            verify_inclusion(leaves[seq], seq, checkpoint.size, proof, checkpoint.root)
        except ProofError:
            raise LogVerificationError(
                LOG_ROOT_MISMATCH,
                f"entry {seq} is not proven by the checkpoint of size {checkpoint.size}: "
                "it, or entries around it, were changed (run a full verify)",
                seq=seq,
            ) from None
    return entry, covering


CONSISTENCY_FORMAT = "modelseal-audit-consistency/v1"


def build_consistency_bundle(
    leaves: Sequence[bytes], first: bytes, first_size: int, second: bytes, second_size: int
) -> str:
    """A JSON bundle proving the signed checkpoint ``first`` is a prefix of ``second``.

    Raises:
        ValueError: The sizes are not ``1 <= first_size <= second_size <= len(leaves)``.
    """
    if not 1 <= first_size <= second_size <= len(leaves):
        raise ValueError(f"need 1 <= {first_size} <= {second_size} <= {len(leaves)}")
    proof = consistency_proof(leaves[:second_size], first_size)
    return json.dumps(
        {
            "format": CONSISTENCY_FORMAT,
            "first_checkpoint": first.decode("utf-8"),
            "second_checkpoint": second.decode("utf-8"),
            "consistency_proof": [base64.b64encode(h).decode("ascii") for h in proof],
        },
        indent=2,
        ensure_ascii=False,
    )


def verify_consistency_bundle(
    text: str | bytes, verifiers: Sequence[NoteVerifier]
) -> tuple[Checkpoint, Checkpoint]:
    """Verify offline that one signed checkpoint extends another (same origin).

    Raises:
        NoteError: The bundle is malformed or the origins differ.
        NoteSignatureError: A checkpoint is not signed by a trusted key.
        ProofError: The second tree does not extend the first.
    """
    try:
        bundle = json.loads(text)
        if not isinstance(bundle, dict) or bundle.get("format") != CONSISTENCY_FORMAT:
            raise NoteError(f"not a {CONSISTENCY_FORMAT} bundle")
        first_note = str(bundle["first_checkpoint"]).encode("utf-8")
        second_note = str(bundle["second_checkpoint"]).encode("utf-8")
        proof = [base64.b64decode(h, validate=True) for h in bundle["consistency_proof"]]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise NoteError("consistency bundle is malformed") from None
    first = open_checkpoint(first_note, verifiers)
    second = open_checkpoint(second_note, verifiers, origin=first.origin)
    verify_consistency(first.size, second.size, first.root, second.root, proof)
    return first, second
