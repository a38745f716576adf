"""Publishing: ``python -m build`` makes a wheel and an sdist of the toolkit (not uploaded),
and the wheel ships the ``py.typed`` marker."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_build_makes_a_typed_wheel_and_an_sdist(tmp_path: Path) -> None:
    pytest.importorskip("build")
    done = subprocess.run(
        [sys.executable, "-m", "build", str(PROJECT), "--outdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    wheels = list(tmp_path.glob("mission_ledger_pep-*.whl"))
    assert len(wheels) == 1
    assert len(list(tmp_path.glob("mission_ledger_pep-*.tar.gz"))) == 1
    names = zipfile.ZipFile(wheels[0]).namelist()
    assert "mission_ledger_pep/py.typed" in names
    assert not any(name.startswith(("ledger/", "api/", "projections/")) for name in names)
