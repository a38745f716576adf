"""The repository stands on its own: no tracked file refers to a path outside it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Spelled in pieces so that this file does not match itself.
OUTSIDE_PATHS = ("../" + "shared", "/" + "work/")


def _tracked_files() -> list[Path]:
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(
        [git, "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    return [ROOT / name for name in listed.decode().split("\0") if name]


def test_no_tracked_file_refers_to_a_path_outside_the_repository() -> None:
    offenders = []
    for path in _tracked_files():
        if path.is_symlink():
            if not path.resolve().is_relative_to(ROOT):
                offenders.append(f"{path.relative_to(ROOT)}: links to {path.readlink()}")
            continue
        if not path.is_file():
            continue
        data = path.read_bytes()
        offenders += [
            f"{path.relative_to(ROOT)}: {needle}"
            for needle in OUTSIDE_PATHS
            if needle.encode() in data
        ]
    assert offenders == []
