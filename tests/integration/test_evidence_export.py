"""`mission-ledger audit export` on both backends, and `audit verify-bundle` checking the
bundle offline: copied elsewhere, in a process without any database setting."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from api.cli import app as cli
from ledger.application import Ledger
from ledger.domain.mandates import ExecutionMandate
from ledger.domain.missions import Mission
from ledger.evidence.bundle import EVENTS, JWKS, MANDATES
from ledger.settings import Settings
from ledger.signing.keyring import Keyring
from tests.builders import OPERATOR, active_mission
from tests.conftest import MutableClock
from tests.mandate_builders import delegable_authority, delegate, issue, mission_with

NARROWER = [
    {
        "type": "mission_resource_access",
        "resource": "https://crm.example.com",
        "actions": ["accounts.read"],
    }
]
MISSION_LEDGER_BIN = Path(sys.executable).with_name("mission-ledger")


def _cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    if settings.embedded:
        monkeypatch.setenv("MISSION_LEDGER_DATA_DIR", str(settings.data_dir))
        return
    assert settings.database_url is not None
    assert settings.key_encryption_key is not None
    monkeypatch.setenv("MISSION_LEDGER_DATABASE_URL", settings.database_url)
    monkeypatch.setenv(
        "MISSION_LEDGER_KEY_ENCRYPTION_KEY", settings.key_encryption_key.get_secret_value()
    )


@dataclass
class Exports:
    """Runs `mission-ledger audit export` on the test's store (signing keys ready)."""

    ledger: Ledger
    keyring: Keyring
    directory: Path

    def run(self, *args: str) -> Path:
        out = self.directory / "bundle.tar"
        out.unlink(missing_ok=True)
        result = CliRunner().invoke(cli, ["audit", "export", *args, "--out", str(out)])
        assert result.exit_code == 0, result.output
        return out


@pytest.fixture
def exports(
    ledger: Ledger,
    signing_keyring: Keyring,
    keyed_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> Exports:
    _cli_env(keyed_settings, monkeypatch)
    return Exports(ledger, signing_keyring, tmp_path)


def _content(bundle: Path, name: str) -> bytes:
    with tarfile.open(bundle) as tar:
        handle = tar.extractfile(name)
        assert handle is not None
        return handle.read()


def _lines(bundle: Path, name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _content(bundle, name).splitlines()]


def _mission_with_mandates(ledger: Ledger) -> tuple[Mission, ExecutionMandate, ExecutionMandate]:
    """A Mission whose root Mandate was delegated and then narrowed (three token versions
    in all), beside another Mission that is no part of its bundle."""
    active_mission(ledger)
    mission = mission_with(ledger, delegable_authority())
    root = issue(ledger, mission)
    child = delegate(ledger, root)
    ledger.narrow_mandate(
        actor=OPERATOR, mandate_id=root.id, authorization_details=NARROWER, reason="crm only"
    )
    active_mission(ledger)
    return mission, root, child


def test_a_mission_bundle_verifies_offline_in_a_process_without_database_settings(
    exports: Exports, tmp_path: Path
) -> None:
    mission, _, _ = _mission_with_mandates(exports.ledger)
    bundle = exports.run("--mission", mission.id)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(bundle, elsewhere / "bundle.tar")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MISSION_LEDGER_", "PG"))}
    result = subprocess.run(
        [str(MISSION_LEDGER_BIN), "audit", "verify-bundle", "bundle.tar"],
        cwd=elsewhere,
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("verified: bundle.tar: Mission " + mission.id)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["bundle.tar"]  # no store opened


def test_a_mission_bundle_holds_every_event_of_its_aggregates_and_no_other(
    exports: Exports,
) -> None:
    ledger = exports.ledger
    mission, root, child = _mission_with_mandates(ledger)
    bundle = exports.run("--mission", mission.id)
    aggregates = {mission.submission_id, mission.id, f"mandates:{mission.id}", root.id, child.id}
    expected = sorted(e.position for aggregate in aggregates for e in ledger.history(aggregate))
    events = _lines(bundle, EVENTS)
    assert [e["position"] for e in events] == expected
    assert {e["originator_id"] for e in events} == aggregates


def test_each_mandate_version_is_signed_by_the_key_active_when_it_was_issued(
    exports: Exports, clock: MutableClock
) -> None:
    ledger, keyring = exports.ledger, exports.keyring
    mission = mission_with(ledger, delegable_authority())
    mandate = issue(ledger, mission)
    first_kid = keyring.active("ES256", clock.now()).kid
    clock.advance(seconds=10)
    second_kid = keyring.rotate("ES256", clock.now()).kid
    ledger.narrow_mandate(
        actor=OPERATOR, mandate_id=mandate.id, authorization_details=NARROWER, reason="crm only"
    )
    bundle = exports.run("--mission", mission.id)
    tokens = _lines(bundle, MANDATES)
    kids = [_header(t["token"])["kid"] for t in tokens]
    assert [(t["mandate_id"], t["mandate_version"]) for t in tokens] == [
        (mandate.id, 1),
        (mandate.id, 2),
    ]
    assert kids == [first_kid, second_kid]
    jwks = json.loads(_content(bundle, JWKS))
    assert {k["kid"] for k in jwks["keys"]} >= {first_kid, second_kid}  # the retired one too


def test_a_time_range_bundle_verifies(exports: Exports) -> None:
    _mission_with_mandates(exports.ledger)
    bundle = exports.run("--from", "2026-01-01T00:00:00Z", "--to", "2027-01-01T00:00:00Z")
    result = CliRunner().invoke(cli, ["audit", "verify-bundle", str(bundle), "--json"])
    report = json.loads(result.stdout)
    assert result.exit_code == 0, report["problems"]
    assert report["lines"][EVENTS] == exports.ledger.head_position()


def _header(token: str) -> dict[str, Any]:
    segment = token.split(".", maxsplit=1)[0]
    return dict(json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))))
