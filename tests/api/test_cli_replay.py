"""``mission-ledger audit replay`` (SPEC 7.4 "Replay") run as a subprocess, as an auditor
would, against the SQLite data directory of a running app: ``--json`` prints ``{mission,
mandates, events}`` with exactly the resources the HTTP API answers ``as_of`` the same
instant; the text form names the state, authority, usage, Mandates and events; a progress
bar is drawn on a terminal only; bad instants and unknown Missions fail with a message.

The story is tests/api/as_of_story.py.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ledger.domain.instants import format_instant, parse_instant
from tests.api.as_of_story import Story, get, tell_story
from tests.api.conftest import Api

CLI = Path(sys.executable).parent / "mission-ledger"


@pytest.fixture
def story(api: Api) -> Story:
    assert api.settings.embedded
    return tell_story(api)


def _env(api: Api) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MISSION_LEDGER_")}
    env["MISSION_LEDGER_DATA_DIR"] = str(api.settings.data_dir)
    return env


def _replay(api: Api, *args: str, **run: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "audit", "replay", *args],
        env=_env(api),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **run,
    )


def _replay_json(api: Api, story: Story, step: str) -> dict[str, Any]:
    done = _replay(api, "--mission", story.mission_id, "--as-of", story.at[step], "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@pytest.mark.parametrize("step", ["narrowed", "suspended"])
def test_replay_json_is_the_mission_and_mandates_the_api_answers_as_of_then(
    api: Api, story: Story, step: str
) -> None:
    replay = _replay_json(api, story, step)
    assert set(replay) == {"mission", "mandates", "events"}
    as_of = story.at[step]
    assert replay["mission"] == get(api, f"/v1/missions/{story.mission_id}", as_of=as_of).json()
    expected = [] if step == "narrowed" else [story.live_mandate[step]]
    assert replay["mandates"] == expected


def test_replay_json_lists_the_events_recorded_by_then_in_log_order(api: Api, story: Story) -> None:
    events = _replay_json(api, story, "suspended")["events"]
    assert [e["type"] for e in events] == ["Approved", "CapabilityContained", "Issued", "Suspended"]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions)


def test_replay_without_as_of_is_the_mission_now(api: Api, story: Story) -> None:
    done = _replay(api, "--mission", story.mission_id, "--json")
    assert done.returncode == 0, done.stderr
    replay = json.loads(done.stdout)
    assert replay["mission"]["version"] == story.live_mission["revoked"]["version"]
    assert [m["state"] for m in replay["mandates"]] == ["revoked"]


def test_replay_text_shows_state_authority_usage_mandates_and_events(
    api: Api, story: Story
) -> None:
    done = _replay(api, "--mission", story.mission_id, "--as-of", story.at["suspended"])
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert f"Mission {story.mission_id} as of {story.at['suspended']}" in text
    assert "state       suspended (version 3)" in text
    assert "Effective Authority Set:\n  - May invoices.read and journal-entries.write" in text
    assert "accounts.read" not in text  # contained
    assert "Usage: none recorded (the Mission has no meter)" in text
    assert f"{story.mandate_id}  suspended (mission_suspended)" in text
    assert "Mission.Suspended v3  by operator-1  (test suspend)" in text


def test_replay_draws_no_progress_bar_off_a_terminal(api: Api, story: Story) -> None:
    done = _replay(api, "--mission", story.mission_id, "--json")
    assert done.returncode == 0
    assert done.stderr == ""


def test_replay_draws_a_progress_bar_on_a_terminal(api: Api, story: Story) -> None:
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(
            [str(CLI), "audit", "replay", "--mission", story.mission_id, "--json"],
            env=_env(api),
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=120,
            check=False,
        )
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0
    assert f"Replaying {story.mission_id}".encode() in drawn
    assert json.loads(done.stdout)["mission"]["id"] == story.mission_id  # stdout stays JSON


def test_replay_before_the_mission_existed_fails_naming_the_instant(api: Api, story: Story) -> None:
    before = format_instant(parse_instant(story.at["approved"]) - timedelta(seconds=1))
    done = _replay(api, "--mission", story.mission_id, "--as-of", before)
    assert done.returncode == 1
    assert (
        done.stderr.strip() == f"error: no Mission with id {story.mission_id!r} existed at {before}"
    )
    assert done.stdout == ""


@pytest.mark.parametrize("as_of", ["yesterday", "2026-11-28T12:00:00", "2999-01-01T00:00:00Z"])
def test_replay_refuses_an_invalid_or_future_instant(api: Api, as_of: str) -> None:
    done = _replay(api, "--mission", "msn_x", "--as-of", as_of)
    assert done.returncode == 2
    assert "--as-of" in done.stderr
