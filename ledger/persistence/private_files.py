"""The embedded data directory is private to the service's user: the directory is created
0700 and every file in it (the SQLite ledger, the key store, the key-encryption key) 0600."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Final

PRIVATE_DIR_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600


def make_private_dir(path: Path) -> None:
    """Create ``path`` (mode 0700) unless it exists; missing parents get the default mode."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)


def make_private_file(path: Path) -> None:
    """Create ``path`` empty (mode 0600) unless it exists, so that a library opening it
    afterwards (SQLite, which also gives its -wal and -shm files the database's mode)
    never creates it with its own, wider default."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))


def write_atomically(path: Path, data: bytes, *, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace ``path`` with ``data`` all at once: a reader sees the old file or the whole
    new one, never part of it, and after a crash the new one is either complete or absent
    (temporary file in the same directory, fsync, rename, fsync of the directory)."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
