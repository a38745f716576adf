"""Which writer processes run below the server's priority (``writer_process_nice``): the
background ones only; a writer that answers wait for keeps the server's priority."""

from __future__ import annotations

from ledger.settings import Settings


def test_writers_run_below_the_server_by_default() -> None:
    settings = Settings()
    assert settings.meter_writer_nice() == settings.decision_writer_nice() == 10


def test_the_meter_writer_keeps_the_servers_priority_without_budget_leases() -> None:
    assert Settings(metering_lease_seconds=0).meter_writer_nice() == 0


def test_the_decision_log_writer_keeps_the_servers_priority_in_sync_mode() -> None:
    assert Settings(decision_log_mode="sync").decision_writer_nice() == 0


def test_no_writer_is_lowered_when_asked_for_none() -> None:
    settings = Settings(writer_process_nice=0)
    assert settings.meter_writer_nice() == settings.decision_writer_nice() == 0
