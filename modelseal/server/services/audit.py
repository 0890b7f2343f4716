"""The audit log service: append entries inside the caller's transaction; checkpoints.

Every security event is one entry (:mod:`modelseal.audit.entry`), written by
:meth:`AuditLog.append` in the same database transaction as the action it records,
so both commit or neither does. Appending locks the single ``audit_state`` row
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite transactions here begin
``IMMEDIATE`` and hold the database write lock), takes its sequence number, chains
the entry to the previous one and extends the Merkle tree's right edge, all in the
caller's transaction: a rolled-back action leaves no gap and no entry. Callers append
as the last statement of their transaction, so the lock is held only until commit.

A background thread signs a checkpoint (C2SP tlog-checkpoint) every
``audit.checkpoint_every_entries`` entries or ``audit.checkpoint_every_seconds``, stores
it in ``audit_checkpoints`` and writes it to ``audit.export_dir`` (one file per tree size,
never overwritten). The checkpoint key is a :class:`~modelseal.audit.note.NoteSigner`:
the key service's when wired, otherwise a local Ed25519 key under
``<data_dir>/audit/`` (mode 0600).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelseal.audit.checkpoint import Checkpoint, sign_checkpoint
from modelseal.audit.entry import GENESIS_PREV, AuditEntry, check_details
from modelseal.audit.errors import (
    LOG_ROOT_MISMATCH,
    LOG_SEQUENCE_GAP,
    LogVerificationError,
    NoteError,
)
from modelseal.audit.merkle import CompactRange, leaf_hash
from modelseal.audit.note import (
    Ed25519NoteSigner,
    NoteSigner,
    NoteVerifier,
    parse_verifier_key,
)
from modelseal.audit.verify import StoredEntry
from modelseal.server.clock import Clock
from modelseal.server.db.audit_models import (
    AUDIT_STATE_ID,
    AuditCheckpointRow,
    AuditRecord,
    AuditState,
)
from modelseal.server.db.session import SessionFactory
from modelseal.server.errors import ConfigurationError
from modelseal.server.settings import Settings

__all__ = [
    "SYSTEM_ACTOR",
    "AuditAction",
    "AuditFilter",
    "AuditLog",
    "admin_actor",
    "export_checkpoint",
    "user_actor",
]

_log = structlog.get_logger("modelseal.server.audit")
SYSTEM_ACTOR = "system"
_SESSION_KEY = "modelseal_audit_appended"
_KEY_FILE = "checkpoint-ed25519.pem"
_VERIFIER_FILE = "verifier-keys"
CHECKPOINT_SUFFIX = ".checkpoint"


class AuditAction(StrEnum):
    """What an entry records. Other strings are accepted too (``area.verb``)."""

    DEVICE_REGISTERED = "device.registered"
    DEVICE_REVOKED = "device.revoked"
    ATTESTATION_VERIFIED = "attestation.verified"
    ATTESTATION_FAILED = "attestation.failed"
    IML_REQUESTED = "iml.requested"
    IML_ISSUED = "iml.issued"
    IML_FAILED = "iml.failed"
    LINK_CREATED = "link.created"
    DOWNLOAD_COMPLETED = "download.completed"
    ISSUANCE_ACKED = "issuance.acked"
    ISSUANCE_DELETED = "issuance.deleted"
    FRAUD_VERDICT = "fraud.verdict"
    FRAUD_OVERRIDE = "fraud.override"
    ADMIN_ACTION = "admin.action"
    KEY_CREATED = "key.created"
    KEY_ACTIVATED = "key.activated"
    KEY_RETIRED = "key.retired"
    KEY_REVOKED = "key.revoked"
    KEY_ROTATED = "key.rotated"
    CONFIG_CHANGED = "config.changed"


def user_actor(user_id: int) -> str:
    """The actor of an action an authenticated user took."""
    return f"user:{user_id}"


def admin_actor() -> str:
    """The actor of an admin CLI command: the operating-system user who ran it."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = f"uid{os.getuid()}"
    return f"admin:{name}"


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries :meth:`AuditLog.entries` returns (all given conditions hold)."""

    user_id: int | None = None
    device_id: str | None = None
    model_id: str | None = None
    action: str | None = None
    since: int | None = None
    until: int | None = None
    limit: int | None = None


def export_checkpoint(directory: Path, size: int, note: bytes) -> Path:
    """Write ``note`` as ``<directory>/<size>.checkpoint``, atomically, never overwriting.

    The file is written to a temporary name, fsynced, then hard-linked into place
    (``link`` fails rather than replace an existing file), and the directory fsynced.

    Returns:
        The path of the checkpoint file (an existing one is left as it was).
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    final = directory / f"{size:012d}{CHECKPOINT_SUFFIX}"
    if final.exists():
        return final
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(note)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        # link() refuses to replace a file: another process's export of this size stays.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, final)
    finally:
        os.unlink(tmp)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return final


def _local_signer(directory: Path, origin: str) -> NoteSigner:
    """The local Ed25519 checkpoint key, created (0600) on first use."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    path = directory / _KEY_FILE
    if not path.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            pass  # created concurrently; load it below
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
                handle.flush()
                os.fsync(handle.fileno())
    if path.stat().st_mode & 0o077:
        raise ConfigurationError(f"checkpoint key {path} must not be readable by others (0600)")
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, ed25519.Ed25519PrivateKey):
        raise ConfigurationError(f"checkpoint key {path} is not an Ed25519 private key")
    return Ed25519NoteSigner(origin, loaded)


class AuditLog:
    """Appends audit entries and signs checkpoints of them."""

    def __init__(
        self,
        sessions: SessionFactory,
        settings: Settings,
        clock: Clock,
        *,
        signer: NoteSigner | Callable[[], NoteSigner] | None = None,
    ) -> None:
        """Wire the log; ``signer`` (or a callable returning it) defaults to a local key.

        Raises:
            ConfigurationError: The origin is not a valid checkpoint origin.
        """
        self._sessions = sessions
        self._settings = settings
        self._clock = clock
        audit = settings.audit
        self.origin = audit.origin or f"{settings.issuer_id}/audit"
        if any(c.isspace() or c in "+\u2014" for c in self.origin):
            raise ConfigurationError(
                "audit.origin must not contain spaces, '+' or em dashes; set audit.origin "
                "(issuer_id is the default prefix)"
            )
        self.key_dir = settings.data_dir / "audit"
        self.export_dir = audit.export_dir or (self.key_dir / "checkpoints")
        self._signer_source = signer
        self._signer: NoteSigner | None = None
        self._known_vkeys: set[str] = set()
        self._every_entries = audit.checkpoint_every_entries
        self._every_seconds = audit.checkpoint_every_seconds
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._uncheckpointed = 0
        self._tree: CompactRange | None = None  # as of the last checkpoint signed here

    # --- appending ----------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the appender's state row if the schema came without it."""
        with self._sessions.begin() as session:
            if session.get(AuditState, AUDIT_STATE_ID) is not None:
                return
        try:
            with self._sessions.begin() as session:
                session.add(
                    AuditState(id=AUDIT_STATE_ID, size=0, last_hash=GENESIS_PREV, frontier=[])
                )
        except IntegrityError:
            pass  # created concurrently

    def append(
        self,
        session: Session,
        action: AuditAction | str,
        *,
        actor: str,
        user_id: int | None = None,
        device_id: str | None = None,
        model_id: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> int:
        """Write one entry inside the caller's transaction; returns its sequence number.

        Call it last in the transaction: it holds the log's lock until commit.

        Raises:
            SecretFieldError: A detail key names a secret (``dek``, ``token``, ...).
            CanonicalJSONError: A value cannot be written canonically (NaN, an integer
                beyond 2**53), or a member breaks the entry format (an empty actor, an
                action over 64 characters, ...).
        """
        body = dict(details or {})
        check_details(body)
        state = session.scalars(
            select(AuditState).where(AuditState.id == AUDIT_STATE_ID).with_for_update()
        ).one()
        now = int(self._clock())
        entry = AuditEntry(
            seq=state.size,
            time=now,
            action=str(action),
            actor=actor,
            prev=state.last_hash,
            user_id=user_id,
            device_id=device_id,
            model_id=model_id,
            details=body,
        )
        data = entry.to_bytes()
        AuditEntry.parse(data)  # what verification will accept: lengths, types, members
        leaf = leaf_hash(data)
        compact = CompactRange(state.size, [bytes.fromhex(h) for h in state.frontier])
        compact.append(leaf)
        session.add(
            AuditRecord(
                seq=entry.seq,
                created_at=now,
                action=entry.action,
                actor=actor,
                user_id=user_id,
                device_id=device_id,
                model_id=model_id,
                entry=data.decode("utf-8"),
            )
        )
        state.size = compact.size
        state.last_hash = leaf.hex()
        state.frontier = [h.hex() for h in compact.hashes]
        session.flush()
        count = session.info.get(_SESSION_KEY, 0)
        if count == 0:
            event.listen(session, "after_commit", self._after_commit, once=True)
        session.info[_SESSION_KEY] = count + 1
        return entry.seq

    def _after_commit(self, session: Session) -> None:
        appended = session.info.pop(_SESSION_KEY, 0)
        self._uncheckpointed += appended
        if self._uncheckpointed >= self._every_entries:
            self._wake.set()

    # --- checkpoints --------------------------------------------------------------------

    @property
    def signer(self) -> NoteSigner:
        """The checkpoint signer now: a fixed one, the key service's active checkpoint
        key (resolved on every use, so rotations apply), or the local key.

        Raises:
            ConfigurationError: The key is unusable.
        """
        source = self._signer_source
        if isinstance(source, NoteSigner):
            signer = source
        elif source is not None:
            signer = source()
        elif self._signer is not None:
            return self._signer
        else:
            signer = _local_signer(self.key_dir, self.origin)
        vkey = signer.verifier_key()
        if vkey not in self._known_vkeys:
            self._remember_verifier(vkey)
            self._known_vkeys.add(vkey)
            pinned = self._settings.audit.verifier_keys
            if pinned and vkey not in pinned:
                # Auditors pinning audit.verifier_keys will refuse what this key signs.
                _log.error("audit_checkpoint_key_not_pinned", verifier_key=vkey)
        self._signer = signer
        return signer

    def _remember_verifier(self, vkey: str) -> None:
        self.key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.key_dir / _VERIFIER_FILE
        known = path.read_text("utf-8").split() if path.exists() else []
        if vkey not in known:
            with path.open("a", encoding="utf-8") as handle:
                handle.write(vkey + "\n")

    def pinned_verifiers(self) -> list[NoteVerifier]:
        """The checkpoint verifier keys pinned in the settings (``audit.verifier_keys``).

        Raises:
            ConfigurationError: A pinned key is malformed.
        """
        result = []
        for index, text in enumerate(self._settings.audit.verifier_keys):
            try:
                result.append(parse_verifier_key(text))
            except NoteError as exc:
                raise ConfigurationError(f"audit.verifier_keys[{index}]: {exc.message}") from None
        return result

    def recorded_verifiers(self) -> list[NoteVerifier]:
        """Every checkpoint key this server has signed with (``<data_dir>/audit``).

        These are trusted only as far as the data directory is; an auditor pins
        the key out of band (``modelseal audit verify --key``).
        """
        path = self.key_dir / _VERIFIER_FILE
        if not path.exists():
            return []
        result = []
        for line in path.read_text("utf-8").split():
            try:
                result.append(parse_verifier_key(line))
            except NoteError:
                _log.warning("audit_verifier_key_unreadable", file=str(path))
        return result

    def _stored_tree(
        self, session: Session, state: AuditState, last: AuditCheckpointRow | None
    ) -> CompactRange:
        """The tree of the stored entries ``0..state.size-1``, hashed from their bytes.

        It extends the tree this process last signed (or, in a new process, is rebuilt
        from every entry once) and must reproduce the last stored checkpoint's root at
        its size and the appender's own root: the log never signs a tree that is not
        the stored entries, or that does not extend what it signed before, whatever
        someone with write access to ``audit_state`` put there.

        Raises:
            LogVerificationError: The entries, the last checkpoint and the appender's
                state disagree.
        """
        last_size = last.tree_size if last is not None else None
        cached = self._tree
        if cached is not None and (last_size is None or cached.size <= last_size):
            tree = CompactRange(cached.size, cached.hashes)
        else:
            tree = CompactRange()

        def check_last() -> None:
            if (
                last is not None
                and tree.size == last.tree_size
                and tree.root().hex() != last.root_hash
            ):
                raise LogVerificationError(
                    LOG_ROOT_MISMATCH,
                    f"the stored entries do not hash to the last checkpoint (size "
                    f"{last.tree_size}): refusing to sign",
                    seq=last.tree_size - 1,
                )

        check_last()
        rows = session.execute(
            select(AuditRecord.seq, AuditRecord.entry)
            .where(AuditRecord.seq >= tree.size, AuditRecord.seq < state.size)
            .order_by(AuditRecord.seq)
            .execution_options(yield_per=1000)
        )
        for seq, text in rows:
            if seq != tree.size:
                raise LogVerificationError(
                    LOG_SEQUENCE_GAP, f"entry {tree.size} is missing: refusing to sign"
                )
            tree.append(leaf_hash(text.encode("utf-8")))
            check_last()
        claimed = CompactRange(state.size, [bytes.fromhex(h) for h in state.frontier])
        if tree.size != state.size or tree.root() != claimed.root():
            raise LogVerificationError(
                LOG_ROOT_MISMATCH,
                f"the appender's state (size {state.size}) does not match the stored "
                f"entries ({tree.size}): refusing to sign",
            )
        return tree

    def checkpoint(self) -> Checkpoint | None:
        """Sign, store and export a checkpoint of the log now, if it grew since the last.

        The signed root is recomputed from the stored entries (see :meth:`_stored_tree`).

        Returns:
            The new checkpoint, or None when there was nothing new.

        Raises:
            LogVerificationError: The stored log is inconsistent; nothing is signed.
        """
        with self._lock:
            with self._sessions() as session:
                state = session.get(AuditState, AUDIT_STATE_ID)
                last = session.scalars(
                    select(AuditCheckpointRow)
                    .order_by(AuditCheckpointRow.tree_size.desc())
                    .limit(1)
                ).first()
                if (
                    state is None
                    or state.size == 0
                    or (last is not None and last.tree_size >= state.size)
                ):
                    return None
                try:
                    tree = self._stored_tree(session, state, last)
                except LogVerificationError as exc:
                    _log.error("audit_checkpoint_refused", error=exc.code, detail=exc.message)
                    raise
            checkpoint = Checkpoint(self.origin, tree.size, tree.root())
            note = sign_checkpoint(checkpoint, [self.signer])
            export_checkpoint(self.export_dir, checkpoint.size, note)
            try:
                with self._sessions.begin() as session:
                    session.add(
                        AuditCheckpointRow(
                            tree_size=checkpoint.size,
                            root_hash=checkpoint.root.hex(),
                            created_at=int(self._clock()),
                            note=note.decode("utf-8"),
                        )
                    )
            except IntegrityError:
                return None  # another process signed this size first
            self._tree = tree
            self._uncheckpointed = 0
            _log.info("audit_checkpoint", tree_size=checkpoint.size)
            return checkpoint

    def start(self) -> None:
        """Start the checkpoint thread (idempotent)."""
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="ms-audit", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        timeout = self._every_seconds or None
        while True:
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stopping:
                return
            try:
                self.checkpoint()
            except Exception:  # noqa: BLE001 - keep the thread; the next round retries
                _log.exception("audit_checkpoint_failed")

    def stop(self) -> None:
        """Stop the thread and sign a last checkpoint of what was appended."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stopping = True
            self._wake.set()
            thread.join(timeout=10)
            try:
                self.checkpoint()
            except Exception:  # noqa: BLE001 - shutting down; the next start signs it
                _log.exception("audit_checkpoint_failed")

    # --- reading ------------------------------------------------------------------------

    def entries(self, where: AuditFilter | None = None) -> list[AuditEntry]:
        """Entries matching ``where``, oldest first (parsed, not verified)."""
        where = where or AuditFilter()
        query = select(AuditRecord.entry).order_by(AuditRecord.seq)
        if where.user_id is not None:
            query = query.where(AuditRecord.user_id == where.user_id)
        if where.device_id is not None:
            query = query.where(AuditRecord.device_id == where.device_id)
        if where.model_id is not None:
            query = query.where(AuditRecord.model_id == where.model_id)
        if where.action is not None:
            query = query.where(AuditRecord.action == where.action)
        if where.since is not None:
            query = query.where(AuditRecord.created_at >= where.since)
        if where.until is not None:
            query = query.where(AuditRecord.created_at < where.until)
        if where.limit is not None:
            query = query.limit(where.limit)
        with self._sessions() as session:
            return [AuditEntry.parse(text.encode("utf-8")) for text in session.scalars(query)]

    def stored(self) -> Iterator[StoredEntry]:
        """Every stored row in sequence order, as verification reads it."""
        with self._sessions() as session:
            rows = session.execute(select(AuditRecord).order_by(AuditRecord.seq)).scalars()
            for row in rows:
                yield StoredEntry(
                    seq=row.seq,
                    data=row.entry.encode("utf-8"),
                    columns={
                        "action": row.action,
                        "actor": row.actor,
                        "user_id": row.user_id,
                        "device_id": row.device_id,
                        "model_id": row.model_id,
                        "time": row.created_at,
                    },
                )

    def appended_size(self) -> int:
        """The appender's own count of entries (``audit_state.size``)."""
        with self._sessions() as session:
            state = session.get(AuditState, AUDIT_STATE_ID)
            return 0 if state is None else state.size

    def stored_checkpoints(self) -> list[tuple[str, bytes]]:
        """Signed checkpoints from the database, as ``(where, note)``."""
        with self._sessions() as session:
            rows = session.scalars(
                select(AuditCheckpointRow).order_by(AuditCheckpointRow.tree_size)
            )
            return [(f"db:{row.tree_size}", row.note.encode("utf-8")) for row in rows]

    def exported_checkpoints(self, directory: Path | None = None) -> list[tuple[str, bytes]]:
        """Signed checkpoints from the export directory, as ``(path, note)``."""
        directory = directory or self.export_dir
        if not directory.is_dir():
            return []
        return [
            (str(path), path.read_bytes())
            for path in sorted(directory.glob(f"*{CHECKPOINT_SUFFIX}"))
        ]

    def all_checkpoints(self, extra: Sequence[tuple[str, bytes]] = ()) -> list[tuple[str, bytes]]:
        """Exported, stored and ``extra`` checkpoints together."""
        return [*self.exported_checkpoints(), *self.stored_checkpoints(), *extra]
