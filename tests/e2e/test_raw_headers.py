"""Header values a real client can send byte for byte, which the in-process test client
cannot (it re-encodes them): HTTP headers are Latin-1, so a superscript digit ("²", byte
0xB2) arrives as a character that ``str.isdigit`` takes and ``int`` refuses. It is a bad
cursor or position, never a server error."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from tests.e2e.server import PEP_SCOPE, running_service


def _raw_get(url: str, path: str, headers: list[bytes], read: int = 4096) -> bytes:
    """GET ``path`` with ``headers`` sent exactly as given; the first bytes of the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        request = b"\r\n".join(
            [f"GET {path} HTTP/1.1".encode(), f"Host: {host}".encode(), *headers, b"", b""]
        )
        sock.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer) < 64:
            chunk = sock.recv(read)
            if not chunk:
                break
            answer += chunk
        return answer


def test_a_superscript_digit_is_a_bad_position_or_cursor_not_a_server_error(
    tmp_path: Path,
) -> None:
    with running_service(tmp_path, "agent-raw", "raw", roles=("operator", "pep")) as (
        url,
        keys,
    ):
        operator = f"Authorization: Bearer {keys['operator']}".encode()
        position = _raw_get(url, "/v1/missions", [operator, b"Ledger-Min-Position: \xb2"])
        assert position.startswith(b"HTTP/1.1 400"), position[:200]

        pep = {"Authorization": f"Bearer {keys['pep']}"}
        stream = httpx.post(
            url + "/ssf/streams",
            json={
                "delivery": {"method": "urn:mission-ledger:delivery:sse"},
                "resources": PEP_SCOPE,
            },
            headers=pep,
        )
        assert stream.status_code == 201, stream.text
        events = f"/ssf/streams/{stream.json()['stream_id']}/events"
        bearer = f"Authorization: Bearer {keys['pep']}".encode()
        # An unreadable Last-Event-ID gets the stream with "event: resync" (a 400 would make
        # a browser's EventSource stop reconnecting for good).
        resumed = _raw_get(url, events, [bearer, b"Last-Event-ID: \xb2"])
        assert resumed.startswith(b"HTTP/1.1 200"), resumed[:200]
