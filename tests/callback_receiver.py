"""A real HTTPS receiver on 127.0.0.1 for access-request callbacks: a certificate for
``localhost`` and ``127.0.0.1`` issued by a throwaway test CA (``trustme``), whose PEM the
service is told to trust (``access_request_callback_ca_file``). It records every request
and answers from ``script`` (one status per request, in order), then 200."""

from __future__ import annotations

import hashlib
import hmac
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    answer: int


@dataclass
class TlsReceiver:
    port: int = 0
    ca_file: Path = Path()
    script: list[int] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "cb", host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}/{path}"

    def take(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            answer = self.script.pop(0) if self.script else 200
            self.requests.append(Received(path, headers, body, answer))
            return answer

    def seen(self) -> list[Received]:
        with self._lock:
            return list(self.requests)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    receiver: TlsReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.receiver.take(self.path, headers, body)
        self.send_response(answer)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def tls_receiver(directory: Path) -> Iterator[TlsReceiver]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(context)
    ca_file = directory / "callback-ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    receiver = TlsReceiver(ca_file=ca_file)
    handler = type("Handler", (_Handler,), {"receiver": receiver})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    receiver.port = int(server.server_address[1])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def signature_verifies(secret: str, received: Received) -> bool:
    """The receiver's check of ``Signature: t=<unix>,v1=<hex>``, written from the documented
    scheme (HMAC-SHA256 keyed by the secret's bytes over ``t + "." + body``)."""
    parts = dict(item.split("=", 1) for item in received.headers["signature"].split(","))
    message = parts["t"].encode() + b"." + received.body
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])
