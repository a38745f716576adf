"""Signed checkpoints on both backends: what is signed, the witness directory, the election
across replicas, shutdown, and `audit verify --checkpoints` catching a truncated tail or a
recomputed chain (SPEC 7.4) by editing the database directly."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from api.cli import app as cli
from api.workers.checkpoints import Checkpointer
from ledger.application import Ledger
from ledger.domain.checkpoints import CHECKPOINT_TYP, parse_checkpoint_payload
from ledger.domain.states import Operation
from ledger.persistence.chain import verify_chain
from ledger.persistence.checkpoints import CheckpointError, CheckpointStore, StoredCheckpoint
from ledger.persistence.store import open_ledger
from ledger.settings import Settings
from ledger.signing.jwks import JwksVerifier
from ledger.signing.keyring import Keyring
from tests.awkward_values import FUZZ, awkward_text
from tests.builders import OPERATOR, active_mission
from tests.conftest import MutableClock
from tests.raw_store import RawStore

INTERVAL = timedelta(seconds=60)
ISSUER = "https://ledger.example"


@pytest.fixture
def settings(keyed_settings: Settings) -> Settings:
    return keyed_settings


@pytest.fixture
def keyring(signing_keyring: Keyring) -> Keyring:
    return signing_keyring


@pytest.fixture
def witness(tmp_path: Path) -> Path:
    return tmp_path / "witness"


def _checkpointer(
    ledger: Ledger, keyring: Keyring, clock: MutableClock, witness: Path
) -> Checkpointer:
    checkpointer = Checkpointer(
        CheckpointStore(ledger.database, ledger.event_log),
        keyring,
        clock,
        issuer=ISSUER,
        alg="ES256",
        interval=INTERVAL,
        directory=witness,
    )
    checkpointer.start()
    return checkpointer


@pytest.fixture
def checkpointer(
    ledger: Ledger, keyring: Keyring, clock: MutableClock, witness: Path
) -> Checkpointer:
    return _checkpointer(ledger, keyring, clock, witness)


def _fill(ledger: Ledger, missions: int = 3) -> None:
    """Three events per Mission (proposal submitted and approved, Mission approved), plus
    a suspension each."""
    for _ in range(missions):
        mission = active_mission(ledger)
        ledger.change_lifecycle(
            actor=OPERATOR, mission_id=mission.id, operation=Operation.SUSPEND, reason="t"
        )


def _witness_files(witness: Path) -> list[str]:
    return sorted(p.name for p in witness.glob("*.jwt"))


def test_a_checkpoint_signs_the_chain_head_into_the_witness_directory(
    ledger: Ledger, keyring: Keyring, checkpointer: Checkpointer, witness: Path, clock: MutableClock
) -> None:
    _fill(ledger)
    issued = checkpointer.tick()
    assert issued is not None
    head = verify_chain(ledger.event_log.chain_rows())
    token = (witness / f"{head.head_position}.jwt").read_text().strip()
    header, payload = JwksVerifier(keyring.jwks(clock.now())).verify(token, typ=CHECKPOINT_TYP)
    signed = parse_checkpoint_payload(payload)
    assert (signed.position, signed.chain_hash, signed.events) == (
        head.head_position,
        head.head_hash,
        head.checked,
    )
    assert signed.issuer == ISSUER
    assert signed.issued_at == clock.now()
    assert header["typ"] == "ledger-checkpoint+jwt"


def test_no_checkpoint_is_made_while_the_log_has_not_moved(
    ledger: Ledger, checkpointer: Checkpointer, witness: Path, clock: MutableClock
) -> None:
    _fill(ledger, missions=1)
    assert checkpointer.tick() is not None
    clock.advance(seconds=10 * INTERVAL.total_seconds())
    assert checkpointer.tick() is None
    assert checkpointer.stop() is None
    assert len(_witness_files(witness)) == 1


def test_the_next_checkpoint_waits_for_the_interval(
    ledger: Ledger, checkpointer: Checkpointer, witness: Path, clock: MutableClock
) -> None:
    _fill(ledger, missions=1)
    assert checkpointer.tick() is not None
    _fill(ledger, missions=1)
    clock.advance(seconds=INTERVAL.total_seconds() - 1)
    assert checkpointer.tick() is None
    clock.advance(seconds=1)
    second = checkpointer.tick()
    assert second is not None
    assert second.position == ledger.head_position()
    assert len(_witness_files(witness)) == 2


def test_shutdown_signs_the_head_before_the_interval_is_over(
    ledger: Ledger, checkpointer: Checkpointer, witness: Path
) -> None:
    _fill(ledger, missions=1)
    assert checkpointer.tick() is not None
    _fill(ledger, missions=1)
    final = checkpointer.stop()
    assert final is not None
    assert final.position == ledger.head_position()
    assert f"{final.position}.jwt" in _witness_files(witness)


def test_a_log_cut_below_the_newest_checkpoint_is_refused_not_signed(
    ledger: Ledger,
    checkpointer: Checkpointer,
    settings: Settings,
    witness: Path,
    clock: MutableClock,
) -> None:
    _fill(ledger, missions=3)
    assert checkpointer.tick() is not None
    RawStore(settings).delete_newest(5)
    clock.advance(seconds=INTERVAL.total_seconds())
    with pytest.raises(CheckpointError, match="behind the newest signed checkpoint"):
        checkpointer.tick()
    assert checkpointer.tick() is None  # not retried before the next interval
    assert len(_witness_files(witness)) == 1


@pytest.fixture
def replicas(
    settings: Settings, ledger: Ledger, keyring: Keyring, clock: MutableClock, witness: Path
) -> Iterator[list[Checkpointer]]:
    """Four replicas' checkpointers: each its own application, connection pool and keyring
    (on the signing key ``keyring`` made)."""
    opened = [open_ledger(settings, clock=clock) for _ in range(3)]
    try:
        everyone = [ledger, *opened]
        yield [
            _checkpointer(app, Keyring.open(settings, app.database), clock, witness)
            for app in everyone
        ]
    finally:
        for app in opened:
            app.close()


def _tick_together(replicas: list[Checkpointer]) -> list[StoredCheckpoint]:
    start = threading.Barrier(len(replicas))
    issued: list[StoredCheckpoint] = []
    lock = threading.Lock()

    def tick(checkpointer: Checkpointer) -> None:
        start.wait()
        made = checkpointer.tick()
        if made is not None:
            with lock:
                issued.append(made)

    threads = [threading.Thread(target=tick, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return issued


def test_one_replica_signs_per_interval(
    ledger: Ledger, replicas: list[Checkpointer], witness: Path, clock: MutableClock
) -> None:
    _fill(ledger, missions=1)
    assert len(_tick_together(replicas)) == 1
    _fill(ledger, missions=1)
    clock.advance(seconds=INTERVAL.total_seconds())
    assert len(_tick_together(replicas)) == 1
    assert len(_witness_files(witness)) == 2


# ---------------------------------------------------------------------- audit verify


def _verify(settings: Settings, witness: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, Any]:
    if settings.embedded:
        monkeypatch.setenv("MISSION_LEDGER_DATA_DIR", str(settings.data_dir))
    else:
        assert settings.database_url is not None
        monkeypatch.setenv("MISSION_LEDGER_DATABASE_URL", settings.database_url)
    result = CliRunner().invoke(cli, ["audit", "verify", "--checkpoints", str(witness), "--json"])
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture
def witnessed(ledger: Ledger, checkpointer: Checkpointer, clock: MutableClock) -> list[str]:
    """A store of 30-odd events with two checkpoints: one mid-way and one at the head. The
    witness files' paths, oldest first."""
    _fill(ledger, missions=4)
    first = checkpointer.tick()
    _fill(ledger, missions=4)
    clock.advance(seconds=INTERVAL.total_seconds())
    second = checkpointer.tick()
    assert first is not None
    assert second is not None
    assert second.position == ledger.head_position() >= 30
    ledger.close()
    witness = checkpointer.directory
    assert witness is not None
    return [str(witness / first.file_name), str(witness / second.file_name)]


def _failed_files(report: Any) -> set[str]:
    return {f["file"] for f in report["checkpoints"]["failed"]}


def test_an_intact_store_passes_with_its_checkpoints(
    witnessed: list[str], settings: Settings, witness: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, report = _verify(settings, witness, monkeypatch)
    assert code == 0, report
    assert report["intact"] is True
    assert report["checkpoints"] == {"checked": 2, "failed": []}


def test_deleting_the_newest_ten_events_fails_naming_the_checkpoint(
    witnessed: list[str], settings: Settings, witness: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    RawStore(settings).delete_newest(10)
    code, report = _verify(settings, witness, monkeypatch)
    assert code == 1
    assert report["intact"] is True  # the chain alone cannot see a cut tail
    [failure] = report["checkpoints"]["failed"]
    assert failure["file"] == witnessed[1]
    assert "truncated" in failure["problem"]


def test_recomputing_the_chain_after_editing_a_payload_fails_naming_the_checkpoints(
    witnessed: list[str], settings: Settings, witness: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = RawStore(settings)
    edited = next(e for e in raw.events() if b"operator-1" in e.state)
    raw.set_state(edited.position, edited.state.replace(b"operator-1", b"operator-9", 1))
    raw.recompute_chain()
    code, report = _verify(settings, witness, monkeypatch)
    assert code == 1
    assert report["intact"] is True  # the rewritten chain verifies on its own
    assert _failed_files(report) == set(witnessed)
    assert all("rewritten" in f["problem"] for f in report["checkpoints"]["failed"])


def test_swapping_two_events_and_recomputing_fails_naming_the_checkpoints(
    witnessed: list[str], settings: Settings, witness: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = RawStore(settings)
    raw.swap(3, 4)
    raw.recompute_chain()
    code, report = _verify(settings, witness, monkeypatch)
    assert code == 1
    assert report["intact"] is True
    assert _failed_files(report) == set(witnessed)


def test_a_forged_checkpoint_file_fails_naming_it(
    witnessed: list[str], settings: Settings, witness: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = Path(witnessed[0])
    header, payload, signature = path.read_text().strip().split(".")
    path.write_text(f"{header}.{payload}.{signature[::-1]}\n")
    code, report = _verify(settings, witness, monkeypatch)
    assert code == 1
    [failure] = report["checkpoints"]["failed"]
    assert failure["file"] == witnessed[0]
    assert "signature" in failure["problem"]


@FUZZ
@given(
    content=st.one_of(
        st.binary(max_size=300),
        awkward_text(max_size=300).map(str.encode),
        st.sampled_from([b"", b"a.b.c\n", b"..\n", b"\xff\xfe\n", b"e30.e30.e30\n"]),
    )
)
def test_no_content_of_a_checkpoint_file_passes_or_crashes_the_verifier(
    witnessed: list[str],
    settings: Settings,
    witness: Path,
    monkeypatch: pytest.MonkeyPatch,
    content: bytes,
) -> None:
    """Whatever a witness file holds instead of its checkpoint, ``audit verify`` reports it
    (exit 1, the file named in its JSON report), never a traceback."""
    Path(witnessed[0]).write_bytes(content)
    code, report = _verify(settings, witness, monkeypatch)
    assert code == 1, report
    assert witnessed[0] in _failed_files(report)
