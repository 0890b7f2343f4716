r"""Errors of the audit library, each with a stable ``code``.

The tree (all under :class:`modelseal.errors.ModelSealError`)::

    AuditError                      audit_error
    ├── CanonicalJSONError          audit_noncanonical: a value JSON cannot carry exactly
    ├── SecretFieldError            audit_secret_field: a detail key names a secret
    ├── NoteError                   audit_note_malformed: not a signed note / checkpoint
    ├── NoteSignatureError          audit_signature_invalid: no trusted signature verifies
    ├── ProofError                  audit_proof_invalid: an inclusion/consistency proof fails
    └── LogVerificationError        one of the LOG_* codes below, naming the first bad entry

The last three are also :class:`~modelseal.errors.VerificationError`\ s (CLI exit code 4).

Verification errors say which check failed and where; they never echo entry contents.
"""

from __future__ import annotations

from modelseal.errors import ModelSealError, VerificationError

__all__ = [
    "LOG_CHAIN_BROKEN",
    "LOG_CHECKPOINT_INCONSISTENT",
    "LOG_CHECKPOINT_SIGNATURE",
    "LOG_COLUMN_MISMATCH",
    "LOG_ENTRY_MALFORMED",
    "LOG_NOT_COVERED",
    "LOG_ROOT_MISMATCH",
    "LOG_SEQUENCE_GAP",
    "LOG_TRUNCATED",
    "AuditError",
    "CanonicalJSONError",
    "LogVerificationError",
    "NoteError",
    "NoteSignatureError",
    "ProofError",
    "SecretFieldError",
]

#: An entry is not canonical JSON, or its fields are of the wrong type.
LOG_ENTRY_MALFORMED = "audit_entry_malformed"
#: The sequence numbers are not 0, 1, 2, ...: an entry was deleted, inserted or moved.
LOG_SEQUENCE_GAP = "audit_sequence_gap"
#: An entry's ``prev`` is not the leaf hash of the entry before it.
LOG_CHAIN_BROKEN = "audit_chain_broken"
#: An indexed column disagrees with the entry it was copied from.
LOG_COLUMN_MISMATCH = "audit_column_mismatch"
#: The entries do not hash to the root of a signed checkpoint.
LOG_ROOT_MISMATCH = "audit_root_mismatch"
#: A signed checkpoint covers more entries than the log holds.
LOG_TRUNCATED = "audit_truncated"
#: A checkpoint file or row does not carry a valid signature of the checkpoint key.
LOG_CHECKPOINT_SIGNATURE = "audit_checkpoint_signature"
#: The entry asked about is not covered by any signed checkpoint yet.
LOG_NOT_COVERED = "audit_not_covered"
#: Two checkpoints of the same size name different roots.
LOG_CHECKPOINT_INCONSISTENT = "audit_checkpoint_inconsistent"


class AuditError(ModelSealError):
    """Base of the audit library's errors."""

    code = "audit_error"


class CanonicalJSONError(AuditError):
    """A value cannot be written as canonical JSON (float, huge int, bad key, lone surrogate)."""

    code = "audit_noncanonical"


class SecretFieldError(AuditError):
    """An audit detail key looks like a secret (``dek``, ``token``, ``private_key``, ...)."""

    code = "audit_secret_field"


class NoteError(AuditError):
    """A signed note or checkpoint is malformed."""

    code = "audit_note_malformed"


class NoteSignatureError(AuditError, VerificationError):
    """No signature of a trusted key verifies on the note."""

    code = "audit_signature_invalid"


class ProofError(AuditError, VerificationError):
    """A Merkle inclusion or consistency proof does not verify."""

    code = "audit_proof_invalid"


class LogVerificationError(AuditError, VerificationError):
    """The log does not match its checkpoints.

    Attributes:
        code: One of the ``LOG_*`` codes of this module.
        seq: The first bad entry (sequence number), or None when no single entry is to blame.
    """

    def __init__(self, code: str, message: str, *, seq: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.seq = seq

    def __reduce__(self) -> tuple[type[LogVerificationError], tuple[str, str]]:  # type: ignore[override]
        return (type(self), (self.code, self.message))
