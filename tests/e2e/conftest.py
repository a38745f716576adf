"""End-to-end fixtures: stores for server subprocesses on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BACKENDS
from tests.e2e.server import ServerProcess, store_env


@pytest.fixture(params=BACKENDS)
def server_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "sqlite":
        return store_env(data_dir=tmp_path / "data")
    return store_env(database_url=request.getfixturevalue("postgres_url"))


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Collects started servers and stops them after the test."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


def launch(
    servers: list[ServerProcess], env: dict[str, str], tmp_path: Path, name: str = "server"
) -> ServerProcess:
    server = ServerProcess(env, tmp_path / f"{name}.log").start()
    servers.append(server)
    return server
