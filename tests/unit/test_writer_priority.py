"""Which writer processes run below the server's priority (``writer_process_nice``,
``writer_process_idle``): the background ones only; a writer that answers wait for keeps
the server's priority."""

from __future__ import annotations

from ledger.settings import Settings, WriterPriority


def test_writers_run_ten_nice_steps_below_the_server_and_idle_by_default() -> None:
    settings = Settings()
    assert settings.meter_writer_priority() == WriterPriority(nice=10, idle=True)
    assert settings.decision_writer_priority() == WriterPriority(nice=10, idle=True)


def test_the_idle_policy_can_be_turned_off_for_both_background_writers() -> None:
    settings = Settings(writer_process_idle=False)
    assert settings.meter_writer_priority() == WriterPriority(nice=10, idle=False)
    assert settings.decision_writer_priority() == WriterPriority(nice=10, idle=False)


def test_the_meter_writer_keeps_the_servers_priority_without_budget_leases() -> None:
    settings = Settings(metering_lease_seconds=0, writer_process_idle=True)
    assert settings.meter_writer_priority() == WriterPriority()


def test_the_decision_log_writer_keeps_the_servers_priority_in_sync_mode() -> None:
    settings = Settings(decision_log_mode="sync", writer_process_idle=True)
    assert settings.decision_writer_priority() == WriterPriority()


def test_no_writer_is_lowered_when_asked_for_none() -> None:
    settings = Settings(writer_process_nice=0, writer_process_idle=False)
    assert settings.meter_writer_priority() == settings.decision_writer_priority()
    assert settings.decision_writer_priority() == WriterPriority()
