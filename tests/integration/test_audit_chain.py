"""`mission-ledger audit verify` on both backends: intact, and after direct tampering."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from typer.testing import CliRunner

from api.cli import app as cli
from ledger.application import Ledger
from ledger.domain.states import Operation
from ledger.persistence import sqlite_rows
from ledger.persistence.chain import verify_chain
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from tests.builders import OPERATOR, active_mission
from tests.conftest import T0, MutableClock


def _fill(ledger: Ledger) -> None:
    """Ten or more events of several kinds."""
    for _ in range(3):
        mission = active_mission(ledger)
        ledger.change_lifecycle(
            actor=OPERATOR, mission_id=mission.id, operation=Operation.SUSPEND, reason="t"
        )


def _tamper(settings: Settings, statements: list[str]) -> None:
    if settings.embedded:
        conn = sqlite3.connect(settings.sqlite_path, isolation_level=None)
        try:
            for statement in statements:
                conn.execute(statement)
        finally:
            conn.close()
        return
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE ledger_events DISABLE TRIGGER USER")
        for statement in statements:
            conn.execute(statement.encode())


def _verify_cli(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, dict[str, object]]:
    if settings.embedded:
        monkeypatch.setenv("MISSION_LEDGER_DATA_DIR", str(settings.data_dir))
    else:
        assert settings.database_url is not None
        monkeypatch.setenv("MISSION_LEDGER_DATABASE_URL", settings.database_url)
    result = CliRunner().invoke(cli, ["audit", "verify", "--json"])
    return result.exit_code, json.loads(result.stdout)


def _events_table(settings: Settings) -> tuple[str, str]:
    return ("stored_events", "rowid") if settings.embedded else ("ledger_events", "notification_id")


def test_intact_store_verifies(
    ledger: Ledger, store_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(ledger)
    code, report = _verify_cli(store_settings, monkeypatch)
    assert code == 0
    assert report["intact"] is True
    assert report["checked"] == ledger.head_position()


def test_database_computed_links_match_the_python_definition(ledger: Ledger) -> None:
    _fill(ledger)
    report = verify_chain(ledger.event_log.chain_rows())
    assert report.intact
    assert report.checked >= 10


Tamper = Callable[[str, str], list[str]]

TAMPERING: dict[str, tuple[Tamper, int]] = {
    "payload edited": (
        lambda t, p: [
            f"UPDATE {t} SET state = substr(state, 1, length(state) - 1) || "
            + ("CAST(X'20' AS BLOB)" if t == "stored_events" else "'\\x20'::bytea")
            + f" WHERE {p} = 5"
        ],
        5,
    ),
    "event deleted": (lambda t, p: [f"DELETE FROM {t} WHERE {p} = 7"], 7),
    "two events swapped": (
        lambda t, p: [
            f"UPDATE {t} SET {p} = -1 WHERE {p} = 3",
            f"UPDATE {t} SET {p} = 3 WHERE {p} = 4",
            f"UPDATE {t} SET {p} = 4 WHERE {p} = -1",
        ],
        3,
    ),
}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_tampering_is_reported_at_the_first_bad_position(
    ledger: Ledger,
    store_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
) -> None:
    _fill(ledger)
    assert ledger.head_position() >= 10
    ledger.close()
    make, bad = TAMPERING[kind]
    _tamper(store_settings, make(*_events_table(store_settings)))
    code, report = _verify_cli(store_settings, monkeypatch)
    assert code == 1
    assert report["intact"] is False
    assert report["first_bad_position"] == bad


def test_forged_event_appended_without_the_chain_is_reported(
    ledger: Ledger, store_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(ledger)
    head = ledger.head_position()
    ledger.close()
    table, position = _events_table(store_settings)
    if store_settings.embedded:
        statement = (
            f"INSERT INTO {table} (rowid, originator_id, originator_version, topic, state) "
            f"VALUES ({head + 1}, 'msn_forged', 1, 'mission-ledger:Mission.Approved', X'7B7D')"
        )
    else:
        statement = (
            f"INSERT INTO {table} (originator_id, originator_version, topic, state, "
            f"{position}, chain_prev, chain_hash) VALUES ('msn_forged', 1, "
            f"'mission-ledger:Mission.Approved', '\\x7b7d', {head + 1}, {head}, '\\x00')"
        )
    _tamper(store_settings, [statement])
    code, report = _verify_cli(store_settings, monkeypatch)
    assert code == 1
    assert report["first_bad_position"] == head + 1


@pytest.mark.postgres
def test_postgres_refuses_updates_and_deletes_of_events(postgres_url: str) -> None:
    ledger = open_ledger(Settings(database_url=postgres_url), clock=MutableClock(T0))
    try:
        active_mission(ledger)
    finally:
        ledger.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for statement in (
            "UPDATE ledger_events SET state = state WHERE notification_id = 1",
            "DELETE FROM ledger_events WHERE notification_id = 1",
            "TRUNCATE ledger_events",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement.encode())


def test_events_saved_together_keep_their_order_bytes_and_returned_positions(
    ledger: Ledger,
) -> None:
    """One insert of several events (as a Meter group saves): each is stored at the position
    the insert returned, in the order given, its state byte for byte (every byte value) and
    its text intact, and the chain over them verifies."""
    states = [bytes(range(256)), b"", '{"note":"caf\u00e9 \u2603"}'.encode(), b"\x00\\'\"{}"]
    events = [
        StoredEvent(
            originator_id=f"test:ordr-\u00e9-{n}",
            originator_version=1,
            topic="ledger:Test.Stored \u2603",
            state=state,
        )
        for n, state in enumerate(states)
    ]
    positions = ledger.recorder.insert_events(events)
    assert positions is not None
    assert list(positions) == sorted(positions)
    stored = ledger.recorder.select_notifications(positions[0], limit=len(events))
    assert [n.id for n in stored] == list(positions)
    assert [(n.originator_id, n.topic, n.state) for n in stored] == [
        (e.originator_id, e.topic, e.state) for e in events
    ]
    assert verify_chain(ledger.event_log.chain_rows()).intact


def test_a_save_of_hundreds_of_events_keeps_their_order_across_statements(
    ledger: Ledger,
) -> None:
    """On SQLite a save goes in as a few multi-row statements (512, 128, 32, 8 and 1 rows):
    700 events are stored and chained in the order given, at the positions returned."""
    events = [
        StoredEvent(
            originator_id=f"test:many-{n % 7}",
            originator_version=1 + n // 7,
            topic="ledger:Test.Stored",
            state=f'{{"n":{n}}}'.encode(),
        )
        for n in range(700)
    ]
    positions = ledger.recorder.insert_events(events)
    assert positions is not None
    assert list(positions) == list(range(positions[0], positions[0] + 700))
    stored = ledger.recorder.select_notifications(positions[0], limit=700)
    assert [(n.originator_id, n.originator_version, n.state) for n in stored] == [
        (e.originator_id, e.originator_version, e.state) for e in events
    ]
    assert verify_chain(ledger.event_log.chain_rows()).intact


def test_sqlite_without_returning_inserts_a_row_at_a_time_in_the_same_order(
    tmp_path: Path, clock: MutableClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite before 3.35 has no ``INSERT … RETURNING``: the events go in one statement a
    row, at the positions that tells, and the chain still verifies."""
    monkeypatch.setattr(sqlite_rows, "RETURNING", False)
    ledger = open_ledger(Settings(data_dir=tmp_path), clock=clock)
    try:
        events = [
            StoredEvent(originator_id=f"test:old-{n}", originator_version=1, topic="t", state=b"{}")
            for n in range(20)
        ]
        positions = ledger.recorder.insert_events(events)
        assert positions is not None
        stored = ledger.recorder.select_notifications(positions[0], limit=20)
        assert [(n.id, n.originator_id) for n in stored] == [
            (p, e.originator_id) for p, e in zip(positions, events, strict=True)
        ]
        assert verify_chain(ledger.event_log.chain_rows()).intact
    finally:
        ledger.close()
