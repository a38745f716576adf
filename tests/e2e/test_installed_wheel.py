"""A plain ``pip install .`` works: the wheel carries the migrations, nothing needs configuring.

The wheel is built from a copy of the sources (so the build leaves nothing in the checkout) and
installed without dependencies into a fresh virtualenv that borrows this environment's
third-party packages through a ``.pth`` line, never its editable install of this project.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from ledger.persistence.database import Dialect
from ledger.persistence.migrations import load_migrations

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "ledger", "projections", "api", "migrations")

pytestmark = pytest.mark.slow


def _build_wheel(tmp_path: Path) -> Path:
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(dist), str(source)], check=True)
    return next(dist.glob("mission_ledger-*.whl"))


def _install(wheel: Path, tmp_path: Path) -> Path:
    """A new virtualenv holding the wheel; returns its ``bin`` directory."""
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", str(wheel)], check=True)
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "borrowed_dependencies.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    return env_dir / "bin"


def test_an_installed_wheel_finds_and_applies_its_migrations(tmp_path: Path) -> None:
    bin_dir = _install(_build_wheel(tmp_path), tmp_path)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISSION_LEDGER_")}
    env |= {"MISSION_LEDGER_DATA_DIR": str(work / "data"), "PYTHONPATH": ""}

    located = subprocess.run(
        [str(bin_dir / "python"), "-c", "import ledger; print(ledger.__file__)"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    migrated = subprocess.run(
        [str(bin_dir / "mission-ledger"), "migrate"],
        cwd=work,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout

    assert Path(located).is_relative_to(tmp_path / "venv")
    expected = [m.name for m in load_migrations(Dialect.SQLITE)]
    assert migrated.strip() == "applied: " + ", ".join(expected)
