"""GET /v1/audit/export (SPEC 7.4): evidence bundles for auditors, and what offline
verification (``ledger.evidence.verify``) makes of them when they are tampered with."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from httpx import Response
from hypothesis import given, settings
from hypothesis import strategies as st

from api.evidence import EventRange, ExportScope
from ledger.evidence.bundle import DECISIONS, EVENTS, JWKS, LISTED_FILES, MANIFEST
from ledger.evidence.verify import BundleReport, verify_bundle
from ledger.settings import Settings
from ledger.signing.algorithms import generate_private_key, public_jwk
from tests.api.conftest import Api, _started, assert_problem
from tests.awkward_values import FUZZ, awkward_text, json_values
from tests.builders import ERP
from tests.conftest import T0, MutableClock
from tests.mandate_builders import jkt

NARROWER = [
    {
        "type": "mission_resource_access",
        "resource": "https://erp.example.com",
        "actions": ["invoices.read"],
    }
]
DECISION = {"evaluation_id": "evl_1", "decision": True, "reason": "test record"}


def _decision_records(scope: ExportScope, events: EventRange) -> list[dict[str, Any]]:
    """A stand-in decision log: one record about the exported Mission."""
    return [{**DECISION, "mission_id": scope.mission_id, "index_position": events.last}]


@dataclass
class Evidence:
    api: Api
    mission_id: str

    def export(self, who: str = "auditor", **params: str) -> Response:
        return self.api.client.get("/v1/audit/export", params=params, headers=self.api.auth(who))


@pytest.fixture(scope="module")
def evidence(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Evidence]:
    """One embedded app for the module: a Mission with a Mandate issued, narrowed and
    revoked, an SSF stream that got their SETs, a checkpoint at the head, and a decision
    source. Tests only read it."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("evidence") / "data")
    for api in _started(settings, MutableClock(T0)):
        api.services.decision_records = _decision_records
        stream = api.client.post(
            "/ssf/streams",
            json={"delivery": {"method": "urn:ietf:rfc:8936"}, "resources": [ERP]},
            headers=api.auth("pep"),
        )
        assert stream.status_code == 201, stream.text
        mission = api.mission()
        mandate = api.client.post(
            f"/v1/missions/{mission['id']}/mandates",
            json={"actor": {"client_id": "agent-1", "instance_id": "i-1"}, "cnf": {"jkt": jkt()}},
            headers=api.auth("agent"),
        )
        assert mandate.status_code == 201, mandate.text
        mandate_id = mandate.json()["mandate_id"]
        for path, body in (
            ("narrow", {"authorization_details": NARROWER, "reason": "read only"}),
            ("revoke", {"reason": "done"}),
        ):
            answer = api.client.post(
                f"/v1/mandates/{mandate_id}/{path}", json=body, headers=api.auth("operator")
            )
            assert answer.status_code == 200, answer.text
        api.mission()  # another Mission, outside the first one's bundle
        assert api.services.follower.wait(api.head(), timeout=30)  # the SETs are signed
        api.clock.advance(seconds=api.settings.checkpoint_interval_seconds)
        api.services.checkpoints.tick()
        yield Evidence(api, mission["id"])


@pytest.fixture(scope="module")
def bundle(evidence: Evidence, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first Mission's bundle, as downloaded."""
    response = evidence.export(mission=evidence.mission_id)
    assert response.status_code == 200, response.text
    path = tmp_path_factory.mktemp("download") / "bundle.tar"
    path.write_bytes(response.content)
    return path


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def _rewritten(path: Path, tmp_path: Path, **replaced: bytes) -> Path:
    """A copy of the bundle with some files' contents replaced (names: dots as _)."""
    members = _members(path)
    for name, content in replaced.items():
        members[name.replace("_", ".")] = content
    out = tmp_path / "tampered.tar"
    with tarfile.open(out, "w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out


def _failed(report: BundleReport) -> str:
    assert not report.ok
    return "\n".join(report.problems)


def test_an_auditor_exports_a_mission_bundle_that_verifies(bundle: Path) -> None:
    report = verify_bundle(bundle)
    assert report.ok, report.problems
    assert report.manifest is not None
    assert report.manifest["range"]["kind"] == "mission"


def test_the_bundle_is_a_tar_named_after_the_mission(evidence: Evidence) -> None:
    response = evidence.export(mission=evidence.mission_id)
    assert response.headers["content-type"] == "application/x-tar"
    disposition = response.headers["content-disposition"]
    assert f'filename="evidence-{evidence.mission_id}.tar"' in disposition


def test_every_file_of_the_bundle_has_content(bundle: Path) -> None:
    members = _members(bundle)
    assert sorted(members) == sorted([MANIFEST, *LISTED_FILES])
    assert [name for name, content in members.items() if not content] == []


def test_the_decision_records_come_from_the_decision_source(
    evidence: Evidence, bundle: Path
) -> None:
    [line] = _members(bundle)[DECISIONS].splitlines()
    record = json.loads(line)
    assert record["evaluation_id"] == DECISION["evaluation_id"]
    assert record["mission_id"] == evidence.mission_id


def test_a_time_range_bundle_verifies(evidence: Evidence, tmp_path: Path) -> None:
    response = evidence.export(**{"from": "2026-01-01T00:00:00Z", "to": "2027-01-01T00:00:00Z"})
    assert response.status_code == 200, response.text
    path = tmp_path / "range.tar"
    path.write_bytes(response.content)
    report = verify_bundle(path)
    assert report.ok, report.problems
    assert report.counts[EVENTS] == evidence.api.head()


@pytest.mark.parametrize("name", [MANIFEST, *LISTED_FILES])
def test_flipping_one_byte_in_any_file_fails_naming_it(
    bundle: Path, tmp_path: Path, name: str
) -> None:
    content = bytearray(_members(bundle)[name])
    content[len(content) // 2] ^= 0x01
    report = verify_bundle(_rewritten(bundle, tmp_path, **{name.replace(".", "_"): bytes(content)}))
    problems = _failed(report)
    assert name in problems or (name == JWKS and MANIFEST in problems), problems


def test_removing_a_line_of_the_events_fails_naming_the_gap(bundle: Path, tmp_path: Path) -> None:
    lines = _members(bundle)[EVENTS].splitlines(keepends=True)
    del lines[1]
    problems = _failed(verify_bundle(_rewritten(bundle, tmp_path, events_jsonl=b"".join(lines))))
    assert f"{EVENTS}: its digest is" in problems
    assert "an event of it is missing" in problems


def test_swapping_the_key_set_fails_on_the_manifest_signature(bundle: Path, tmp_path: Path) -> None:
    other = {"keys": [public_jwk(generate_private_key("ES256"), "ES256")]}
    problems = _failed(
        verify_bundle(_rewritten(bundle, tmp_path, jwks_json=json.dumps(other).encode()))
    )
    assert problems.startswith(f"{MANIFEST}: the signature does not verify against {JWKS}")
    assert "not in the key set" in problems


def test_a_bundle_verifies_against_the_trusted_published_keys(
    evidence: Evidence, bundle: Path
) -> None:
    published = evidence.api.client.get("/.well-known/jwks.json").json()
    assert verify_bundle(bundle, trusted=published).ok


def test_a_bundle_signed_by_keys_outside_the_trusted_set_fails(bundle: Path) -> None:
    other = {"keys": [public_jwk(generate_private_key("ES256"), "ES256")]}
    problems = _failed(verify_bundle(bundle, trusted=other))
    assert f"{JWKS}: key" in problems
    assert "is not one of the trusted keys" in problems


def test_an_operator_may_not_export_evidence(evidence: Evidence) -> None:
    response = evidence.export("operator", mission=evidence.mission_id)
    assert_problem(response, 403, "forbidden")


@pytest.mark.parametrize(
    "params",
    [{}, {"from": "2026-01-01T00:00:00Z"}, {"mission": "msn_x", "from": "2026-01-01T00:00:00Z"}],
    ids=["nothing", "from-only", "mission-and-range"],
)
def test_an_export_names_one_mission_or_a_whole_time_range(
    evidence: Evidence, params: dict[str, str]
) -> None:
    assert_problem(evidence.export(**params), 400, "invalid_request")


def test_a_range_that_ends_before_it_starts_is_400(evidence: Evidence) -> None:
    response = evidence.export(**{"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"})
    body = assert_problem(response, 400, "invalid_request")
    assert body["errors"][0]["pointer"] == "/to"


def test_an_unknown_mission_is_404(evidence: Evidence) -> None:
    assert_problem(evidence.export(mission="msn_unknown"), 404, "not_found")


_FILES = [MANIFEST, *LISTED_FILES]


@st.composite
def _corruptions(draw: st.DrawFn, original: dict[str, bytes]) -> tuple[str, bytes]:
    """One file of the bundle corrupted: a byte changed, cut short, a line dropped or
    duplicated, or its content replaced by any JSON value."""
    name = draw(st.sampled_from(_FILES))
    content = original[name]
    how = draw(st.sampled_from(["byte", "cut", "drop line", "repeat line", "json"]))
    if how == "byte":
        at = draw(st.integers(0, len(content) - 1))
        value = draw(st.integers(0, 255).filter(lambda b: b != content[at]))
        return name, content[:at] + bytes([value]) + content[at + 1 :]
    if how == "cut":
        return name, content[: draw(st.integers(0, len(content) - 1))]
    lines = content.splitlines(keepends=True)
    if how in ("drop line", "repeat line") and len(lines) > 1:
        at = draw(st.integers(0, len(lines) - 1))
        kept = lines[:at] + lines[at + 1 :] if how == "drop line" else lines[: at + 1] + lines[at:]
        return name, b"".join(kept)
    return name, json.dumps(draw(json_values(awkward_text()))).encode() + b"\n"


@settings(FUZZ, max_examples=150)
@given(data=st.data())
def test_no_corruption_of_a_bundle_verifies_or_crashes_the_verifier(
    bundle: Path, tmp_path: Path, data: st.DataObject
) -> None:
    """Any one file changed (as above) makes ``verify_bundle`` report a problem, and never
    raise: an auditor gets a finding, not a traceback."""
    name, corrupted = data.draw(_corruptions(_members(bundle)))
    report = verify_bundle(_rewritten(bundle, tmp_path, **{name.replace(".", "_"): corrupted}))
    assert not report.ok, (name, corrupted[:200])
