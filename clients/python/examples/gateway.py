"""An example API gateway guarding an ERP behind Mission Ledger.

    pip install mission-ledger-pep uvicorn
    export LEDGER_URL=http://127.0.0.1:8080 LEDGER_PEP_KEY=...   # a `pep` API key
    python examples/gateway.py                                  # listens on 127.0.0.1:9000

An agent calls ``GET /invoices/7`` (``invoices.read``) or ``POST /invoices/7/pay``
(``invoices.pay``) with its Mandate in ``X-Mandate``, its ``client_id`` in ``X-Agent-Id``,
its instance in ``X-Agent-Instance`` and the thumbprint of the key it proved in
``X-Proof-Jkt``. (A real gateway takes the thumbprint from a DPoP proof or HTTP message
signature it verified itself, never from a header the caller chose.)

Every call is checked locally first (``MandateGuard``: signature, expiry, key binding,
revocation set fed by the signal stream) and then asked of the PDP; anything doubtful is a
403. The signal stream (created on first start, its id kept next to the cursor) keeps the
revocation set current across restarts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from mission_ledger_pep import (
    AsyncPdpClient,
    MandateGuard,
    MissionLedgerMiddleware,
    SignalSubscriber,
)

ERP = "https://erp.example.com"
ACTIONS = {"GET": "invoices.read", "POST": "invoices.pay"}
SSE_DELIVERY = "urn:mission-ledger:delivery:sse"


async def erp(scope: Any, receive: Any, send: Any) -> None:
    """The protected upstream (here: a stub answering JSON)."""
    decision = scope.get("mission_ledger.decision")
    body = json.dumps(
        {"path": scope["path"], "evaluation_id": decision and decision.context.get("evaluation_id")}
    )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


def mapper(scope: Mapping[str, Any], headers: Mapping[str, str]) -> dict[str, Any] | None:
    """The AuthZEN request for a call to the ERP; None for unprotected paths."""
    if scope["path"] == "/healthz":
        return None
    subject: dict[str, Any] = {"type": "agent", "id": headers.get("x-agent-id", "")}
    if "x-agent-instance" in headers:
        subject["properties"] = {"instance_id": headers["x-agent-instance"]}
    context: dict[str, Any] = {"mandate": headers.get("x-mandate", "")}
    if "x-proof-jkt" in headers:
        context["proof"] = {"jkt": headers["x-proof-jkt"]}
    return {
        "subject": subject,
        "action": {"name": ACTIONS.get(scope["method"], "invoices.unknown")},
        "resource": {"type": "api", "id": ERP + scope["path"].removesuffix("/pay")},
        "context": context,
    }


@dataclass
class Gateway:
    app: MissionLedgerMiddleware
    pdp: AsyncPdpClient
    guard: MandateGuard
    subscriber: SignalSubscriber


def stream_id_for(ledger_url: str, pep_key: str, state_dir: Path) -> str:
    """The gateway's SSE stream: created once, its id remembered in ``state_dir``."""
    remembered = state_dir / "stream_id"
    if remembered.exists():
        return remembered.read_text().strip()
    response = httpx.post(
        ledger_url + "/ssf/streams",
        json={
            "delivery": {"method": SSE_DELIVERY},
            "description": "example gateway",
            "resources": [ERP],  # only Missions and Mandates over the ERP reach this stream
        },
        headers={"Authorization": f"Bearer {pep_key}"},
    )
    response.raise_for_status()
    state_dir.mkdir(parents=True, exist_ok=True)
    remembered.write_text(response.json()["stream_id"])
    return remembered.read_text()


def build(
    ledger_url: str,
    pep_key: str,
    state_dir: Path,
    *,
    stream_id: str | None = None,
    pdp_timeout: float = 2.0,
) -> Gateway:
    """The gateway; a decision the PDP has not answered within ``pdp_timeout`` seconds is
    refused (``pdp_unavailable``: the toolkit fails closed)."""
    metadata = httpx.get(ledger_url + "/.well-known/mission-authority-server").json()
    guard = MandateGuard(metadata["jwks_uri"], issuer=metadata["issuer"])
    pdp = AsyncPdpClient(ledger_url, pep_key, timeout=pdp_timeout)
    subscriber = SignalSubscriber(
        ledger_url,
        pep_key,
        stream_id or stream_id_for(ledger_url, pep_key, state_dir),
        cursor_path=state_dir / "cursor",
        guard=guard,
    )
    app = MissionLedgerMiddleware(erp, pdp=pdp, mapper=mapper, guard=guard)
    return Gateway(app, pdp, guard, subscriber)


def main() -> None:
    import uvicorn  # noqa: PLC0415 - only the runnable example needs a server

    gateway = build(
        os.environ.get("LEDGER_URL", "http://127.0.0.1:8080"),
        os.environ["LEDGER_PEP_KEY"],
        Path(os.environ.get("GATEWAY_STATE_DIR", ".gateway-state")),
    )
    gateway.subscriber.start()
    try:
        uvicorn.run(gateway.app, host="127.0.0.1", port=int(os.environ.get("GATEWAY_PORT", "9000")))
    finally:
        gateway.subscriber.stop()


if __name__ == "__main__":
    main()
