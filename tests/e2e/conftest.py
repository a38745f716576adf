"""End-to-end fixtures: stores for server subprocesses on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, PostgresServer
from tests.e2e.server import ServerProcess, store_env


@pytest.fixture(params=BACKENDS)
def server_env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "sqlite":
        return store_env(data_dir=tmp_path / "data")
    return store_env(database_url=request.getfixturevalue("postgres_url"))


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[ServerProcess]]:
    """Collects started servers and stops them after the test (before any fixture is torn
    down: ``pytest_runtest_teardown``)."""
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Stop a test's servers before its fixtures are torn down. Fixtures are torn down in
    the reverse order of their set-up, and a test that asks for ``servers`` before the
    database its servers use (``server_env``) would otherwise have that database dropped
    under running servers, whose shutdown then waits on their connection pools."""
    started = getattr(item, "funcargs", {}).get("servers")
    for server in started or ():
        server.stop()


def launch(
    servers: list[ServerProcess], env: dict[str, str], tmp_path: Path, name: str = "server"
) -> ServerProcess:
    server = ServerProcess(env, tmp_path / f"{name}.log").start()
    servers.append(server)
    return server


@pytest.fixture(scope="module", params=BACKENDS)
def shared_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """One running server per backend for a whole module, for tests that each make what
    they use (their own stream, Mission) and never stop the server."""
    tmp = tmp_path_factory.mktemp(f"shared-{request.param}")
    pg: PostgresServer | None = None
    database = ""
    if request.param == "sqlite":
        env = store_env(data_dir=tmp / "data")
    else:
        pg = request.getfixturevalue("postgres_server")
        database = pg.create_database(template=pg.template)
        env = store_env(database_url=pg.url_for(database))
    server = ServerProcess(env, tmp / "server.log").start()
    try:
        yield server
    finally:
        server.stop()
        if pg is not None:
            pg.drop_later(database)
