"""The embedded store is private to the service's user (issue 10, C.12): its data directory
is created 0700 and every file in it (the SQLite ledger with its -wal and -shm files, the
signing-key store and its lock, the key-encryption key) 0600, whatever the umask allows."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ledger.domain.actors import Actor
from ledger.domain.roles import Role
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from ledger.signing.keyring import rotate_signing_key
from tests.conftest import MutableClock


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """The common 022: without explicit modes, files come out world-readable."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("permissive_umask")
def test_the_embedded_data_directory_and_its_files_are_private(
    tmp_path: Path, clock: MutableClock
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    ledger = open_ledger(settings, clock=clock)
    try:
        ledger.issue_api_key(name="ops", role=Role.OPERATOR, actor=Actor(type="cli", name="t"))
        rotate_signing_key(settings, alg="ES256", activate_in=timedelta(0), now=clock.now())
        files = {path.name: _mode(path) for path in settings.data_dir.iterdir()}
    finally:
        ledger.close()

    assert _mode(settings.data_dir) == 0o700
    assert {"ledger.sqlite3", "ledger.sqlite3-wal", "signing-keys.json"} <= set(files)
    assert {name: oct(mode) for name, mode in files.items() if mode != 0o600} == {}
