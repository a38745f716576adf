"""Shared fixtures.

Backends: ``store_settings`` is parametrised over embedded SQLite and a real
PostgreSQL server (never a mock). The backend contract tests (tests/integration and
everything outside tests/api) run on both. The HTTP contract tests (tests/api) run on
SQLite; those marked ``postgres_smoke`` (the ones exercising backend-specific behaviour:
consistency, idempotency races, lifecycle, LISTEN/NOTIFY wake-ups, the CLI on another
connection) run on PostgreSQL too. ``pytest --every-backend`` runs every HTTP contract
test on both.

Each PostgreSQL test gets its own database, cloned from a migrated template
(``CREATE DATABASE ... TEMPLATE``) and dropped afterwards, so no test depends on what
another left behind. Drops run in a background thread (a ``DROP DATABASE`` waits for a
server checkpoint, which the next test need not wait for); the session waits for them at
its end. The server is named by ``MISSION_LEDGER_TEST_PG`` (set by ``.ci/with-postgres``),
default ``postgresql://postgres@127.0.0.1:5432/postgres``.
"""

from __future__ import annotations

import os
import queue
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from pydantic import SecretStr

from ledger.application import Ledger
from ledger.persistence.migrations import migrate
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from ledger.signing.keyring import Keyring

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
HTTP_CONTRACT_TESTS = Path(__file__).parent / "api"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--every-backend",
        action="store_true",
        default=False,
        help="run every HTTP contract test (tests/api) on PostgreSQL too, not only the "
        "postgres_smoke subset",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` first (in their collected order): ``--dist loadgroup`` hands tests
    out one at a time, so the long ones start at once on every worker and the many short ones
    fill in around them, instead of one long test starting last on an otherwise idle run."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise ``backend``: both backends, except that an HTTP contract test runs on
    PostgreSQL only when marked ``postgres_smoke`` (or with ``--every-backend``)."""
    if "backend" not in metafunc.fixturenames:
        return
    http_contract = metafunc.definition.path.is_relative_to(HTTP_CONTRACT_TESTS)
    smoke = metafunc.definition.get_closest_marker("postgres_smoke") is not None
    every = bool(metafunc.config.getoption("--every-backend"))
    backends = BACKENDS if smoke or every or not http_contract else ["sqlite"]
    metafunc.parametrize("backend", backends, indirect=True)


class MutableClock:
    """A clock tests move by hand. Thread-safe, always timezone-aware UTC."""

    def __init__(self, start: datetime) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, **delta: float) -> datetime:
        with self._lock:
            self._now += timedelta(**delta)
            return self._now

    def set(self, value: datetime) -> None:
        with self._lock:
            self._now = value


T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True, scope="session")
def _no_gc_freeze_in_test_processes() -> Iterator[None]:
    """Apps started inside the test process leave the collector alone: freezing (and the
    full collection before it) would act on the whole pytest process at every start-up.
    Servers started as subprocesses (tests/e2e) run the default policy."""
    previous = os.environ.get("MISSION_LEDGER_GC_FREEZE")
    os.environ["MISSION_LEDGER_GC_FREEZE"] = "false"
    yield
    if previous is None:
        os.environ.pop("MISSION_LEDGER_GC_FREEZE", None)
    else:
        os.environ["MISSION_LEDGER_GC_FREEZE"] = previous


@pytest.fixture
def clock() -> MutableClock:
    return MutableClock(T0)


# ---------------------------------------------------------------------- PostgreSQL


@dataclass
class PostgresServer:
    admin_url: str
    template: str | None = None
    created: list[str] = field(default_factory=list)
    dropper: Dropper | None = None

    def url_for(self, dbname: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + dbname, "", ""))

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5)

    def create_database(self, *, template: str | None = None) -> str:
        name = f"ml_test_{uuid.uuid4().hex[:16]}"
        with self.admin() as conn:
            if template:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
            else:
                conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def drop_later(self, name: str) -> None:
        """Drop ``name`` in the background (see ``Dropper``)."""
        if self.dropper is None:
            self.dropper = Dropper(self)
        self.dropper.put(name)

    def close(self) -> None:
        """Wait for the background drops."""
        if self.dropper is not None:
            self.dropper.close()
            self.dropper = None


class Dropper:
    """Drops databases on a thread of its own: ``DROP DATABASE`` waits for a server
    checkpoint (most of a second on a busy machine), which the next test need not wait for.
    Whatever is queued is dropped concurrently, so those drops share checkpoints. Nothing
    reuses a dropped name, so nothing waits for a drop until the session ends."""

    BATCH = 8

    def __init__(self, server: PostgresServer) -> None:
        self._server = server
        self._names: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name="drop-databases", daemon=True)
        self._thread.start()

    def put(self, name: str) -> None:
        self._names.put(name)

    def close(self) -> None:
        self._names.put(None)
        self._thread.join()
        if self._errors:
            raise self._errors[0]

    def _run(self) -> None:
        with ThreadPoolExecutor(self.BATCH, thread_name_prefix="drop-database") as pool:
            closing = False
            while not closing:
                batch = [self._names.get()]
                while len(batch) < self.BATCH and not self._names.empty():
                    batch.append(self._names.get())
                closing = None in batch
                names = [name for name in batch if name is not None]
                for done in wait([pool.submit(self._server.drop_database, n) for n in names])[0]:
                    error = done.exception()
                    if error is not None:  # reported by close()
                        self._errors.append(error)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    url = os.environ.get("MISSION_LEDGER_TEST_PG", DEFAULT_PG)
    server = PostgresServer(admin_url=url)
    try:
        with server.admin() as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL tests need a server at {url} ({error}). Run the suite with "
            "`make test` (it starts one when none is running) or set MISSION_LEDGER_TEST_PG.",
            pytrace=False,
        )
    template = server.create_database()
    migrate(Settings(database_url=server.url_for(template)))
    server.template = template
    yield server
    server.close()
    server.drop_database(template)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, migrated database of its own."""
    name = postgres_server.create_database(template=postgres_server.template)
    yield postgres_server.url_for(name)
    postgres_server.drop_later(name)


@pytest.fixture
def empty_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    name = postgres_server.create_database()
    yield postgres_server.url_for(name)
    postgres_server.drop_later(name)


# ---------------------------------------------------------------------- both backends


def in_process_writer(settings: Settings) -> Settings:
    """``settings`` with the decision log and the Meters written by threads of the app's
    process, unless they name a writer: the API tests start an app per test (~2,000), and a
    writer process adds ~0.3 s to each start. The writer processes have tests of their own
    (tests/integration/test_decision_log_process.py, tests/api/pdp/test_decision_log_http.py,
    tests/integration/test_meter_process.py) and every server the e2e tests run uses them
    (the default)."""
    update = {
        name: "thread"
        for name in ("decision_log_writer", "meter_writer")
        if name not in settings.model_fields_set
    }
    return settings.model_copy(update=update)


def make_settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    if backend == "sqlite":
        return Settings(data_dir=tmp_path / "data")
    url = request.getfixturevalue("postgres_url")
    return Settings(database_url=url, db_pool_size=2, db_max_overflow=6)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgres`` (parametrised by ``pytest_generate_tests`` above)."""
    return str(request.param)


@pytest.fixture
def store_settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    return make_settings(backend, tmp_path, request)


@pytest.fixture
def ledger(store_settings: Settings, clock: MutableClock) -> Iterator[Ledger]:
    app = open_ledger(store_settings, clock=clock)
    yield app
    app.close()


# ---------------------------------------------------------------------- signing keys

TEST_KEK = SecretStr("lWcOZs6m3ZbD1gE0Lw3tQkYpZ4I2pM5ZuCCvXbSyUbA")


def with_kek(settings: Settings) -> Settings:
    """PostgreSQL keeps signing keys encrypted with a configured key; embedded makes one."""
    if settings.embedded:
        return settings
    return settings.model_copy(update={"key_encryption_key": TEST_KEK})


@pytest.fixture
def keyed_settings(store_settings: Settings) -> Settings:
    """``store_settings`` able to open the signing keys (a key-encryption key on PostgreSQL)."""
    return with_kek(store_settings)


@pytest.fixture
def signing_keyring(keyed_settings: Settings, ledger: Ledger, clock: MutableClock) -> Keyring:
    """The store's signing keys with an active ES256 key, signing the ledger's Mandates."""
    keyring = Keyring.open(keyed_settings, ledger.database)
    keyring.ensure("ES256", clock.now())
    ledger.signer = keyring
    return keyring
