"""The repository stands on its own: no tracked file refers to a path outside it, and the
project's version is stated once (``pyproject.toml``)."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from api.app import create_app
from ledger.settings import Settings

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


def _project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as file:
        return str(tomllib.load(file)["project"]["version"])


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


def test_no_source_file_restates_the_version() -> None:
    quoted = f'"{_project_version()}"'
    sources = [p for p in _tracked_files() if p.suffix == ".py" and not p.is_symlink()]
    assert [str(p.relative_to(ROOT)) for p in sources if quoted in p.read_text()] == []


def test_the_api_reports_the_installed_version(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))
    assert app.version == version("mission-ledger") == _project_version()
