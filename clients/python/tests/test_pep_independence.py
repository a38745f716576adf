"""The toolkit stands alone: it never imports the server's packages, and depends only on
httpx, joserfc and the standard library."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src" / "mission_ledger_pep"
ALLOWED_THIRD_PARTY = {"httpx", "joserfc", "mission_ledger_pep"}


def imported_roots() -> set[str]:
    roots: set[str] = set()
    for path in SOURCE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                roots.add(node.module.split(".")[0])
    return roots


def test_the_toolkit_imports_only_httpx_joserfc_and_the_standard_library() -> None:
    foreign = imported_roots() - ALLOWED_THIRD_PARTY - set(sys.stdlib_module_names)
    assert foreign == set()


def test_the_toolkit_never_imports_the_server_packages() -> None:
    assert imported_roots() & {"ledger", "projections", "api", "tests"} == set()
