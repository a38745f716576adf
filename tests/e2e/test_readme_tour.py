"""The README's tour, run verbatim: the ```sh block after the ``tour-script`` marker under
"## A tour" is executed by ``bash -euo pipefail`` against a real server on a fresh store,
with only what the README itself lets a reader change: ``ML`` (the server's URL), ``PATH``
(where ``mission-ledger`` is) and ``MISSION_LEDGER_DATA_DIR`` (the store the CLI opens).

It must show a permit, the revocation's session-revoked SET on the SSE stream, and a deny.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.e2e.server import BIN, ServerProcess, store_env

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
MARKER = re.compile(r"<!-- tour-script\b.*?-->\n```sh\n(?P<script>.*?)\n```\n", re.DOTALL)


def tour_script(readme: str) -> str:
    """The one marked ```sh block of the "## A tour" section."""
    _, found, rest = readme.partition("\n## A tour\n")
    assert found, 'README.md has no "## A tour" section'
    section = rest.split("\n## ", 1)[0]
    blocks = MARKER.findall(section)
    assert len(blocks) == 1, "the tour section must hold exactly one tour-script block"
    return str(blocks[0])


def run_tour(script: Path, env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run the script in its own session; whatever it leaves running is stopped after."""
    out, err = cwd / "tour.out", cwd / "tour.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", str(script)],
            env=env,
            cwd=cwd,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = process.wait(timeout=120)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
    return code, out.read_text(), err.read_text()


def _sets_in(transcript: Path) -> list[str]:
    return [
        line[len("data: ") :]
        for line in transcript.read_text().splitlines()
        if line.startswith("data: eyJ")
    ]


def _payload(token: str) -> dict[str, Any]:
    encoded = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))))


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The tour's output, the SSE transcript it kept, and the server it ran against (one run
    for the module: a fresh store, a server on a free port)."""
    tmp_path = tmp_path_factory.mktemp("tour")
    env = store_env(data_dir=tmp_path / "data")
    server = ServerProcess(env, tmp_path / "server.log").start()
    try:
        script = tmp_path / "tour.sh"
        script.write_text(tour_script(README.read_text(encoding="utf-8")))
        work = tmp_path / "work"
        work.mkdir()
        code, stdout, stderr = run_tour(
            script,
            env | {"ML": server.url, "PATH": f"{BIN}:{env['PATH']}", "TMPDIR": str(work)},
            work,
        )
        assert code == 0, f"the tour failed ({code}):\n{stdout}\n{stderr}"
        transcripts = list(work.glob("*/sets.txt"))
        assert len(transcripts) == 1, transcripts
        yield {"stdout": stdout, "sets": _sets_in(transcripts[0]), "url": server.url}
    finally:
        server.stop()


def test_the_tour_permits_then_denies_after_the_revocation(tour: dict[str, Any]) -> None:
    assert re.findall(r'"decision": (true|false)', tour["stdout"]) == ["true", "false"]


def test_the_tour_receives_a_signed_session_revoked_set_for_its_mandate(
    tour: dict[str, Any],
) -> None:
    mandates = set(re.findall(r"mdt_[A-Za-z0-9_-]+", tour["stdout"]))
    assert len(mandates) == 1, mandates
    keys = KeySet.import_key_set(httpx.get(tour["url"] + "/.well-known/jwks.json").json())
    revoked = [
        claims
        for claims in (_payload(token) for token in tour["sets"])
        if SESSION_REVOKED in claims["events"]
    ]
    assert [claims["sub_id"]["session"]["id"] for claims in revoked] == list(mandates)
    for token in tour["sets"]:
        assert jwt.decode(token, keys, algorithms=["ES256"]).claims["iss"] == tour["url"]
