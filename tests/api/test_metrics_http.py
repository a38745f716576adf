"""``GET /metrics``: Prometheus text for operators and auditors, counting what this
process did; a credential is required like everywhere else."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from ledger.settings import Settings
from tests.api.conftest import Api, assert_problem, issue_keys, with_kek
from tests.conftest import MutableClock


def _samples(
    api: Api, who: str = "operator"
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.client.get("/metrics", headers=api.auth(who))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_metrics_need_a_credential(api: Api) -> None:
    assert_problem(api.client.get("/metrics"), 401, "unauthorized")


def test_metrics_need_the_operator_or_auditor_role(api: Api) -> None:
    assert_problem(api.client.get("/metrics", headers=api.auth("agent")), 403, "forbidden")


def test_auditors_may_read_metrics(api: Api) -> None:
    assert _samples(api, "auditor")


@pytest.mark.postgres_smoke
def test_metrics_report_the_log_head_and_the_read_model_position(api: Api) -> None:
    api.mission()
    _trailing_read_models_caught_up(api)
    samples = _samples(api)
    assert samples[("mission_ledger_log_head_position", ())] == api.head()
    assert samples[("mission_ledger_read_model_position", ())] == api.head()
    assert samples[("mission_ledger_index_missions", ())] == 1


def _trailing_read_models_caught_up(api: Api) -> None:
    """A write answers once the core read models include it; the signal log and the SSE hub
    trail (a read model is given a batch only when the batch holds an event it reads)."""
    assert api.services.follower.wait(api.head(), 10)


def test_metrics_report_each_read_models_batches_and_time(api: Api) -> None:
    before = _samples(api)
    api.mission()
    _trailing_read_models_caught_up(api)
    after = _samples(api)
    for read_model in ("mission_board", "signal_log", "evaluation_index", "sse_hub"):
        labels = (("read_model", read_model),)
        batches = "mission_ledger_read_model_batches_total"
        assert after[(batches, labels)] > before[(batches, labels)], read_model
        applying = "mission_ledger_read_model_apply_seconds_total"
        assert after[(applying, labels)] > before[(applying, labels)], read_model
        assert ("mission_ledger_read_model_lock_wait_seconds_total", labels) in after


def test_metrics_count_decisions_by_outcome_and_denial_reason(api: Api) -> None:
    body = {
        "subject": {"type": "agent", "id": "agent-1"},
        "resource": {"type": "api", "id": "https://erp.example.com/invoices"},
        "action": {"name": "invoices.read"},
        "context": {},
    }
    for _ in range(3):
        response = api.client.post("/access/v1/evaluation", json=body, headers=api.auth("pep"))
        assert response.json()["decision"] is False
    samples = _samples(api)
    assert samples[("mission_ledger_decisions_total", (("decision", "deny"),))] == 3
    assert samples[("mission_ledger_decisions_total", (("decision", "permit"),))] == 0
    denials = {
        labels: value
        for (name, labels), value in samples.items()
        if name == "mission_ledger_denials_total"
    }
    assert sum(denials.values()) == 3


def test_metrics_report_the_meter_writers_backlog_and_its_age(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How the backlog is counted is the writer's (tests/integration/test_metering_contract.py);
    # here, that /metrics shows what the writer reports.
    assert _samples(api)[("mission_ledger_metering_backlog", ())] == 0
    monkeypatch.setattr(api.services.meters, "backlog", lambda: (7, 2.5))
    samples = _samples(api)
    assert samples[("mission_ledger_metering_backlog", ())] == 7
    assert samples[("mission_ledger_metering_backlog_age_seconds", ())] == 2.5


@pytest.mark.parametrize(
    ("metric", "counter"),
    [
        ("mission_ledger_metering_writer_restarts_total", "restarts"),
        ("mission_ledger_metering_writer_starved_total", "starved"),
    ],
)
def test_metrics_report_the_meter_writer_process_counters(
    api: Api, monkeypatch: pytest.MonkeyPatch, metric: str, counter: str
) -> None:
    # Counted by the process backend (tests/integration/test_meter_process.py); the API tests
    # run the writer on a thread, which is never restarted nor starved.
    assert _samples(api)[(metric, ())] == 0
    monkeypatch.setattr(api.services.meters._backend, counter, 3)
    assert _samples(api)[(metric, ())] == 3


def test_metrics_report_the_decision_log_writers_replaced_as_starved(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Counted by the process writer (tests/integration/test_decision_log_process.py).
    assert _samples(api)[("mission_ledger_decision_log_writer_starved_total", ())] == 0
    monkeypatch.setattr(api.services.decisions, "starved", 4)
    assert _samples(api)[("mission_ledger_decision_log_writer_starved_total", ())] == 4


def test_metrics_report_the_frozen_objects_when_the_gc_policy_is_on(
    store_settings: Settings, clock: MutableClock
) -> None:
    settings = with_kek(store_settings).model_copy(update={"gc_freeze": True})
    with TestClient(create_app(settings, clock=clock)) as client:
        operator = issue_keys(client)["operator"]
        response = client.get("/metrics", headers={"Authorization": f"Bearer {operator}"})
        samples = {
            sample.name: sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }
    assert samples["mission_ledger_gc_frozen_objects"] > 0
    assert samples["mission_ledger_gc_full_collections_total"] == 0


def _signal_waits(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float],
) -> dict[str, float]:
    return {
        dict(labels)["outcome"]: value
        for (name, labels), value in samples.items()
        if name == "mission_ledger_signal_waits_total"
    }


def test_metrics_count_a_governance_write_with_no_local_subscriber_as_not_waiting(
    api: Api,
) -> None:
    mission = api.mission()
    assert api.lifecycle(mission["id"], "suspend").status_code == 200
    samples = _samples(api)
    assert _signal_waits(samples) == {"no_subscribers": 1}
    assert samples[("mission_ledger_signal_wait_seconds_count", ())] == 0


def test_metrics_count_a_governance_write_with_the_signal_wait_off_as_disabled(
    store_settings: Settings, clock: MutableClock
) -> None:
    settings = with_kek(store_settings).model_copy(update={"signal_wait_ms": 0})
    with TestClient(create_app(settings, clock=clock)) as client:
        api = Api(client=client, keys=issue_keys(client), clock=clock, settings=settings)
        mission = api.mission()
        assert api.lifecycle(mission["id"], "suspend").status_code == 200
        samples = _samples(api)
    assert _signal_waits(samples) == {"disabled": 1}
    assert samples[("mission_ledger_signal_wait_seconds_count", ())] == 0
