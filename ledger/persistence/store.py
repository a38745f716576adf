"""Open the event store described by the settings (embedded SQLite or PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

from ledger.application import Ledger
from ledger.clock import Clock, SystemClock
from ledger.persistence.migrations import MigrationError, migrate, pending
from ledger.settings import Settings

_SQLITE_RECORDER = "ledger.persistence.sqlite:ChainedSQLiteApplicationRecorder"
#: The library's SQLite factory with connections that keep their prepared statements.
_SQLITE_FACTORY = "ledger.persistence.sqlite_connections:Factory"
_POSTGRES_RECORDER = "ledger.persistence.postgres:LedgerPostgresApplicationRecorder"


def persistence_env(settings: Settings) -> dict[str, str]:
    """The ``eventsourcing`` environment for these settings (the only place it is built)."""
    common = {
        "ORIGINATOR_ID_TYPE": "text",
        "CREATE_TABLE": "n",  # migrations/ owns the schema
        "AGGREGATE_CACHE_MAXSIZE": "2000",
        "AGGREGATE_CACHE_FASTFORWARD": "y",
    }
    if settings.embedded:
        return {
            **common,
            "PERSISTENCE_MODULE": _SQLITE_FACTORY,
            "SQLITE_DBNAME": str(settings.sqlite_path),
            "SQLITE_LOCK_TIMEOUT": str(settings.db_lock_timeout_seconds),
            "APPLICATION_RECORDER_TOPIC": _SQLITE_RECORDER,
        }
    params = settings.postgres_params()
    return {
        **common,
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": params["dbname"],
        "POSTGRES_HOST": params["host"],
        "POSTGRES_PORT": str(params["port"]),
        "POSTGRES_USER": params["user"],
        "POSTGRES_PASSWORD": params["password"] or "unused-with-trust-auth",
        "POSTGRES_POOL_SIZE": str(settings.db_pool_size),
        "POSTGRES_MAX_OVERFLOW": str(settings.db_max_overflow),
        "POSTGRES_LOCK_TIMEOUT": str(settings.db_lock_timeout_seconds),
        "POSTGRES_CONNECT_TIMEOUT": "10",
        # No pre-ping round trip per checkout: the library retries operations that fail
        # on a dropped connection (InterfaceError/OperationalError) anyway.
        "POSTGRES_PRE_PING": "n",
        "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT": "30",
        "APPLICATION_RECORDER_TOPIC": _POSTGRES_RECORDER,
    }


def ensure_schema(settings: Settings) -> None:
    """Embedded: migrate. PostgreSQL: migrate when allowed, else refuse to run on an old schema."""
    if settings.embedded or settings.auto_migrate:
        migrate(settings)
        return
    todo = pending(settings)
    if todo:
        msg = (
            f"the database schema is behind this version ({len(todo)} pending: "
            f"{', '.join(todo)}); run `mission-ledger migrate` first"
        )
        raise MigrationError(msg)


def open_ledger(settings: Settings, *, clock: Clock | None = None) -> Ledger:
    """Check or apply migrations, then open the Ledger application."""
    ensure_schema(settings)
    ledger = Ledger(
        persistence_env(settings),
        clock=clock or SystemClock(),
        issuer=settings.public_issuer,
        proposal_ttl=timedelta(seconds=settings.proposal_ttl_seconds),
        policy_version=settings.policy_version,
        require_subject_assertion=settings.require_subject_assertion,
    )
    ledger.access_request_ttl = timedelta(seconds=settings.access_request_task_ttl_seconds)
    return ledger
