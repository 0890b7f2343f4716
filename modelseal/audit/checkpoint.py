"""C2SP tlog-checkpoint (c2sp.org/tlog-checkpoint): the signed tree head of the audit log.

The note text is::

    <origin>\\n
    <tree size, decimal, no leading zeros>\\n
    <base64 root hash>\\n
    [extension lines]

signed as a C2SP signed note (:mod:`modelseal.audit.note`). The origin names the log;
modelseal uses it as the key name of the checkpoint signature too.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from modelseal.audit.errors import NoteError, NoteSignatureError
from modelseal.audit.merkle import HASH_SIZE
from modelseal.audit.note import NoteSigner, NoteVerifier, open_note, sign_note

__all__ = ["Checkpoint", "open_checkpoint", "sign_checkpoint"]

_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A tree head: origin, size and root hash (and extension lines, unsigned meaning)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        """The note text."""
        if not self.origin or any(c.isspace() and c != " " for c in self.origin):
            raise NoteError("checkpoint origin must be a non-empty line")
        if len(self.root) != HASH_SIZE:
            raise NoteError(f"checkpoint root must be {HASH_SIZE} bytes")
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii")]
        return "\n".join([*lines, *self.extensions]) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Parse a checkpoint note text.

        Raises:
            NoteError: Missing lines, a non-canonical size, or a root of the wrong length.
        """
        if not text.endswith("\n"):
            raise NoteError("checkpoint must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or not lines[0]:
            raise NoteError("checkpoint needs origin, size and root lines")
        if not _SIZE.fullmatch(lines[1]):
            raise NoteError("checkpoint size must be a decimal without leading zeros")
        try:
            root = base64.b64decode(lines[2], validate=True)
        except binascii.Error:
            raise NoteError("checkpoint root is not base64") from None
        if len(root) != HASH_SIZE:
            raise NoteError(f"checkpoint root must be {HASH_SIZE} bytes")
        if any(not line for line in lines[3:]):
            raise NoteError("checkpoint extension lines must not be empty")
        return cls(lines[0], int(lines[1]), root, tuple(lines[3:]))


def sign_checkpoint(checkpoint: Checkpoint, signers: Sequence[NoteSigner]) -> bytes:
    """The signed note of ``checkpoint``.

    Raises:
        NoteError: The checkpoint or a key name is invalid.
    """
    return sign_note(checkpoint.text(), signers)


def open_checkpoint(
    data: bytes, verifiers: Sequence[NoteVerifier], *, origin: str | None = None
) -> Checkpoint:
    """Verify a signed checkpoint and parse it.

    The origin is bound to the log's key: a trusted key whose name is the origin must
    have signed (modelseal names its checkpoint key after the origin, as
    c2sp.org/tlog-checkpoint recommends). The name on a signature line is not signed,
    and an ECDSA key ID does not cover it, so without this binding a checkpoint of
    another log sharing the key could be relabelled and pass as this log's.

    Raises:
        NoteError: Malformed, or its origin is not ``origin``.
        NoteSignatureError: No trusted signature verifies, or none by a key named
            after the checkpoint's origin.
    """
    note = open_note(data, verifiers)
    checkpoint = Checkpoint.parse(note.text)
    if origin is not None and checkpoint.origin != origin:
        raise NoteError("checkpoint is for another log (origin differs)")
    if checkpoint.origin not in note.verified_by:
        raise NoteSignatureError("no trusted key named after the checkpoint's origin signed it")
    return checkpoint
