"""The client's data directory: its layout, private files, atomic writes and the lock.

Layout (directories 0700, files 0600, all owned by the user running the client)::

    <root>/
      client.json          the client's settings and enrolment (:mod:`.config`)
      issuer-jwks.json     the pinned issuer JWK Set (trust on first use)
      credentials.mseal    the API token, sealed at rest under the "credentials" KEK
      outbox.json          acknowledgements and security events not yet delivered
      keys/                the FileKeystore (absent with a PKCS#11 keystore)
      models/<mid>.mseal   at-rest packages (rtype kek), one per model id
      downloads/<mid>.part ciphertext of an issued package being downloaded
      downloads/<mid>.json where that download stands (job id, jti, size)
      .lock                flock(2) held by whoever changes the directory

Nothing in it ever holds a plaintext model. POSIX only.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from modelseal._ijson import no_duplicate_members
from modelseal.client.errors import ClientBusyError, ClientStateError, NotInitializedError
from modelseal.errors import UsageError

__all__ = [
    "DIRECTORY_MODE",
    "FILE_MODE",
    "MODEL_ID_PATTERN",
    "DataDir",
    "check_model_id",
    "read_json_object",
    "read_private_bytes",
    "write_json_object",
    "write_private_bytes",
]

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600
MAX_STATE_FILE_BYTES = 1 << 20
# The server's model id alphabet (settings.ModelSpec): safe as a file name as it is.
MODEL_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_OTHERS = 0o077


_no_duplicates = no_duplicate_members(
    lambda name: ClientStateError(f"duplicate JSON member {name!r}")
)


def check_model_id(model_id: str) -> str:
    """Check a model id: 1-64 of ``A-Z a-z 0-9 . _ -``, starting with a letter or digit.

    Raises:
        UsageError: It is not.
    """
    if not isinstance(model_id, str) or not MODEL_ID_PATTERN.fullmatch(model_id):
        raise UsageError(
            "model id must be 1-64 characters of A-Z a-z 0-9 . _ - starting with a letter "
            f"or digit, got {model_id!r}"
        )
    return model_id


def _check_private(st: os.stat_result, path: Path, what: str) -> None:
    if st.st_uid != os.geteuid():
        raise ClientStateError(f"client {what} {path} belongs to uid {st.st_uid}, not this user")
    if st.st_mode & _OTHERS:
        raise ClientStateError(
            f"client {what} {path} is open to other users (mode {st.st_mode & 0o777:04o})"
        )


def _make_private_dir(path: Path) -> None:
    try:
        path.mkdir(mode=DIRECTORY_MODE)
        # mkdir's mode passes through the umask; set it exactly.
        path.chmod(DIRECTORY_MODE)
    except FileExistsError:
        pass
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode):
        raise ClientStateError(f"client path {path} is not a directory")
    _check_private(st, path, "directory")


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_private_bytes(path: Path, data: bytes | bytearray | memoryview) -> None:
    """Replace ``path`` atomically with ``data``: a 0600 temp file, fsync, rename, fsync dir.

    A reader sees the old file or the new one, never a mix; a crash leaves at most a
    ``.<name>.*.tmp`` file, which holds only what ``path`` would have held.
    """
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    _fsync_directory(path.parent)


def read_private_bytes(path: Path, *, max_bytes: int) -> bytes | None:
    """Read a private regular file (no symlinks), or None if it does not exist.

    Raises:
        ClientStateError: Not a regular file, open to others, or larger than ``max_bytes``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ClientStateError(f"client file {path} is a symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as src:
        st = os.fstat(src.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ClientStateError(f"client file {path} is not a regular file")
        _check_private(st, path, "file")
        data = src.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ClientStateError(f"client file {path} is larger than {max_bytes} bytes")
    return data


def read_json_object(path: Path) -> dict[str, Any] | None:
    """Read a private JSON object file, or None if it does not exist.

    Raises:
        ClientStateError: The file is unsafe, not UTF-8 JSON, or not an object.
    """
    data = read_private_bytes(path, max_bytes=MAX_STATE_FILE_BYTES)
    if data is None:
        return None
    try:
        document = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ClientStateError(f"client file {path} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ClientStateError(f"client file {path} must hold a JSON object")
    return document


def write_json_object(path: Path, document: Mapping[str, object]) -> None:
    """Write a JSON object atomically (sorted keys, ASCII) with mode 0600."""
    text = json.dumps(document, sort_keys=True, indent=1, ensure_ascii=True) + "\n"
    write_private_bytes(path, text.encode("ascii"))


class DataDir:
    """Paths of one client data directory, created private on demand."""

    __slots__ = ("_root",)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        """Refer to ``root``; nothing is created until :meth:`create` or :meth:`check`."""
        self._root = Path(root)

    @property
    def root(self) -> Path:
        """The directory itself."""
        return self._root

    @property
    def config(self) -> Path:
        """``client.json``."""
        return self._root / "client.json"

    @property
    def pinned_jwks(self) -> Path:
        """``issuer-jwks.json``."""
        return self._root / "issuer-jwks.json"

    @property
    def credentials(self) -> Path:
        """``credentials.mseal``."""
        return self._root / "credentials.mseal"

    @property
    def outbox(self) -> Path:
        """``outbox.json``."""
        return self._root / "outbox.json"

    @property
    def keys(self) -> Path:
        """``keys/``, the FileKeystore directory."""
        return self._root / "keys"

    @property
    def models(self) -> Path:
        """``models/``."""
        return self._root / "models"

    @property
    def downloads(self) -> Path:
        """``downloads/``."""
        return self._root / "downloads"

    def model_path(self, model_id: str) -> Path:
        """Where the at-rest copy of ``model_id`` lives."""
        return self.models / f"{check_model_id(model_id)}.mseal"

    def partial_path(self, model_id: str) -> Path:
        """Where the ciphertext of a download of ``model_id`` accumulates."""
        return self.downloads / f"{check_model_id(model_id)}.part"

    def download_state_path(self, model_id: str) -> Path:
        """Where the state of a download of ``model_id`` is kept."""
        return self.downloads / f"{check_model_id(model_id)}.json"

    def create(self) -> None:
        """Create the directory tree (0700), or check an existing one.

        Raises:
            ClientStateError: A path exists but is not a private directory of this user.
        """
        self._root.parent.mkdir(parents=True, exist_ok=True)
        for directory in (self._root, self.models, self.downloads):
            _make_private_dir(directory)

    def check(self) -> None:
        """Check that the tree exists and is private, creating missing subdirectories.

        Raises:
            NotInitializedError: The directory does not exist.
            ClientStateError: As for :meth:`create`.
        """
        if not self._root.is_dir():
            raise NotInitializedError(
                f"no client in {self._root}; run `modelseal device init` first"
            )
        self.create()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the directory's exclusive lock; the kernel drops it if the process dies.

        Raises:
            ClientBusyError: Another process holds it.
        """
        fd = os.open(self._root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ClientBusyError(
                    f"another modelseal client is using {self._root}; try again when it is done"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
