"""The auditor's console (SPEC 7.4, 7.5): decision log search with the API's filters and
cursor, chain and checkpoint status with a verification of both, and the evidence bundle
download; auditors (and admins) only, read-only."""

from __future__ import annotations

import html
import io
import re
import tarfile
from collections.abc import Iterator

import pytest

from ledger.settings import Settings
from tests.api.pdp.access_flow import Flow
from tests.api.pdp.conftest import TEST_KEK, Harness, _started
from tests.api.test_console_http import Person
from tests.conftest import MutableClock


@pytest.fixture
def h(
    store_settings: Settings, clock: MutableClock, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    witness = tmp_path_factory.mktemp("witness")
    update: dict[str, object] = {"decision_log_mode": "sync", "checkpoint_dir": witness}
    if not store_settings.embedded:
        update["key_encryption_key"] = TEST_KEK
    yield from _started(store_settings.model_copy(update=update), clock)


def decided(h: Harness) -> Flow:
    """A gated Mission: one deny (approval required) recorded in the decision log."""
    flow = Flow.gated(h)
    flow.evaluate()
    return flow


def test_the_auditor_searches_the_decision_log_by_mission_and_outcome(h: Harness) -> None:
    flow = decided(h)
    other = decided(h)
    auditor = Person(h, "auditor")
    page = auditor.get("/console/audit/decisions", mission=flow.mission_id, decision="deny")
    assert page.status_code == 200, page.text
    assert f'href="/console/missions/{flow.mission_id}"' in page.text
    assert other.mission_id not in page.text
    assert "approval_required" in page.text
    none = auditor.get("/console/audit/decisions", mission=flow.mission_id, decision="permit")
    assert "No decision matches." in none.text


def test_the_decision_search_pages_with_the_logs_cursor(h: Harness) -> None:
    flow = Flow.gated(h)
    for _ in range(55):
        flow.evaluate()
    auditor = Person(h, "auditor")
    first = auditor.get("/console/audit/decisions", mission=flow.mission_id)
    assert first.text.count("<tr>") == 51  # the header row and 50 records
    found = re.search(r'href="/console/audit/decisions\?([^"]+)">Next page', first.text)
    assert found is not None
    second = auditor.client.get("/console/audit/decisions?" + html.unescape(found.group(1)))
    assert second.text.count("<tr>") == 6


def test_a_bad_decision_filter_is_a_400_page(h: Harness) -> None:
    auditor = Person(h, "auditor")
    page = auditor.get("/console/audit/decisions", decision="maybe")
    assert page.status_code == 400
    assert "must be permit or deny" in page.text


def test_only_auditors_and_admins_open_the_auditor_pages(h: Harness) -> None:
    flow = decided(h)
    for who in ("approver", "operator"):
        person = Person(h, who)
        for path in (
            "/console/audit/decisions",
            "/console/audit/chain",
            "/console/audit/export",
            f"/console/audit/export/bundle?mission={flow.mission_id}",
        ):
            assert person.client.get(path).status_code == 403, (who, path)
    admin = Person(h, "admin")
    assert admin.get("/console/audit/decisions").status_code == 200


def test_chain_status_shows_checkpoints_and_verifies_them_with_the_chain(h: Harness) -> None:
    decided(h)
    services = h.client.app.state.services  # type: ignore[attr-defined]
    issued = services.checkpoints.stop()  # a checkpoint now, as at shutdown
    assert issued is not None
    page = Person(h, "auditor").get("/console/audit/chain", verify="1")
    assert page.status_code == 200
    assert f"position {issued.position}" in page.text
    assert "Intact:" in page.text
    assert "Checkpoints: all 1 stored and 1 in the witness directory match the chain." in page.text


def test_a_checkpoint_the_chain_no_longer_matches_is_named(h: Harness) -> None:
    decided(h)
    services = h.client.app.state.services  # type: ignore[attr-defined]
    issued = services.checkpoints.stop()
    assert issued is not None
    services.ledger.database.execute(
        "UPDATE ledger_checkpoints SET chain_hash = %s WHERE position = %s",
        (b"\x00" * 32, issued.position),
    )
    page = Person(h, "auditor").get("/console/audit/chain", verify="1")
    assert "Checkpoints the chain no longer matches" in page.text
    assert f"stored checkpoint {issued.position}" in page.text


def test_the_auditor_downloads_a_missions_evidence_bundle(h: Harness) -> None:
    flow = decided(h)
    auditor = Person(h, "auditor")
    mission_page = auditor.get(f"/console/missions/{flow.mission_id}")
    assert f"/console/audit/export/bundle?mission={flow.mission_id}" in mission_page.text
    head = h.head()
    response = auditor.get("/console/audit/export/bundle", mission=flow.mission_id)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-tar"
    assert f"evidence-{flow.mission_id}.tar" in response.headers["content-disposition"]
    with tarfile.open(fileobj=io.BytesIO(response.content)) as bundle:
        names = set(bundle.getnames())
    assert {"events.jsonl", "decisions.jsonl", "jwks.json", "manifest.jws"} <= names
    assert h.head() == head  # read-only


def test_a_time_range_bundle_takes_the_forms_utc_times(h: Harness) -> None:
    decided(h)
    start = (h.clock.now().replace(second=0, microsecond=0)).strftime("%Y-%m-%dT%H:%M")
    end = "2099-01-01T00:00"
    response = Person(h, "auditor").get(
        "/console/audit/export/bundle", **{"from": start, "to": end}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-tar"
