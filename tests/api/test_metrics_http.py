"""``GET /metrics``: Prometheus text for operators and auditors, counting what this
process did; a credential is required like everywhere else."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.api.conftest import Api, assert_problem


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


def test_metrics_report_the_log_head_and_the_read_model_position(api: Api) -> None:
    api.mission()
    samples = _samples(api)
    assert samples[("mission_ledger_log_head_position", ())] == api.head()
    assert samples[("mission_ledger_read_model_position", ())] == api.head()
    assert samples[("mission_ledger_index_missions", ())] == 1


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
