"""The server's checkpoints (SPEC 7.4): signed at shutdown into the witness directory, and
counted in /metrics."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from ledger.settings import Settings
from tests.api.conftest import _started
from tests.conftest import T0, MutableClock


def _settings(tmp_path: Path) -> Settings:
    # The scheduler's first tick is a minute away: only shutdown signs in these tests.
    return Settings(
        data_dir=tmp_path / "data",
        checkpoint_dir=tmp_path / "witness",
        scheduler_interval_seconds=60,
    )


def test_the_server_signs_the_head_into_the_witness_directory_at_shutdown(
    tmp_path: Path,
) -> None:
    for api in _started(_settings(tmp_path), MutableClock(T0)):
        api.mission()
        head = api.head()
        assert list((tmp_path / "witness").iterdir()) == []
    assert [p.name for p in (tmp_path / "witness").iterdir()] == [f"{head}.jwt"]


def test_metrics_count_the_checkpoints_signed_and_the_witness_failures(tmp_path: Path) -> None:
    for api in _started(_settings(tmp_path), MutableClock(T0)):
        api.mission()
        assert api.services.checkpoints.tick() is not None
        response = api.client.get("/metrics", headers=api.auth("auditor"))
        samples = {
            (s.name, tuple(s.labels.values())): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }
        assert samples[("mission_ledger_checkpoints_issued_total", ())] == 1
        assert samples[("mission_ledger_checkpoint_witness_failures_total", ("dir",))] == 0
        assert samples[("mission_ledger_checkpoint_witness_failures_total", ("http",))] == 0
