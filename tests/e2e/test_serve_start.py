"""`mission-ledger serve` that cannot listen says so and exits non-zero (3, as uvicorn's own
runner did), rather than exiting 0 as if it had served."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.e2e.server import cli, store_env


def test_serve_on_a_port_already_taken_exits_with_status_3(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = store_env(data_dir=tmp_path / "data") | {"MISSION_LEDGER_LOG_LEVEL": "info"}
        result = cli(env, "serve", "--port", str(port))
    assert result.returncode == 3, result.stdout + result.stderr
    assert "address already in use" in result.stderr.lower()
