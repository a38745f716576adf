"""An egress proxy that asks Mission Ledger before every connection an agent opens.

A forward proxy on asyncio streams (standard library) plus httpx for the PDP. For each
``CONNECT host:port`` (HTTPS) or absolute-URI request (``GET http://host:port/...``) it asks
``POST /access/v1/evaluation`` whether the agent may reach that origin (``resource.type``
``egress``). On a permit it tunnels; on a requestable denial it submits the access request
itself (so a person sees it in the approver inbox) and answers ``511 Network Authentication
Required`` with ``Link: <captive_url>; rel="captive-portal"`` (RFC 8908/8910); once the
request is approved it re-evaluates with ``context.approval`` and lets the connection through
while the approval lasts. Any other answer, or the PDP unreachable: 403 (fail closed).

Run it (one agent per proxy; see README.md):

    python proxy.py --pdp http://127.0.0.1:8080 --pep-key mlk_... \\
        --mandate-file mandate.jwt --jkt <thumbprint> --agent my-agent --instance i-1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

log = logging.getLogger("egress-proxy")

ACTION = "egress.connect"


@dataclass
class Agent:
    """Who this proxy speaks for: the agent, its instance, its Mandate and proof key."""

    client_id: str
    instance_id: str
    mandate: str
    jkt: str


@dataclass
class Gate:
    """Asks the PDP, and keeps per origin the access request it made and its approval."""

    pdp: httpx.AsyncClient
    agent: Agent
    tasks: dict[str, str] = field(default_factory=dict)  # origin -> task id
    approvals: dict[str, dict[str, Any]] = field(default_factory=dict)  # origin -> approval

    def _evaluation(self, origin: str, approval: dict[str, Any] | None) -> dict[str, Any]:
        context: dict[str, Any] = {"mandate": self.agent.mandate, "proof": {"jkt": self.agent.jkt}}
        if approval is not None:
            context["approval"] = approval
        return {
            "subject": {
                "type": "agent",
                "id": self.agent.client_id,
                "properties": {"instance_id": self.agent.instance_id},
            },
            "action": {"name": ACTION},
            "resource": {"type": "egress", "id": origin},
            "context": context,
        }

    async def decide(self, origin: str) -> tuple[bool, str | None]:
        """(permitted, captive_url of a requestable denial)."""
        approval = self.approvals.get(origin) or await self._approval(origin)
        request = self._evaluation(origin, approval)
        decision = await self._evaluate(request)
        if decision.get("decision") is True:
            return True, None
        if approval is not None:  # spent, expired or revoked: ask afresh
            self.approvals.pop(origin, None)
            self.tasks.pop(origin, None)
            request = self._evaluation(origin, None)
            decision = await self._evaluate(request)
            if decision.get("decision") is True:
                return True, None
        access = decision.get("context", {}).get("access_request")
        if not isinstance(access, dict) or "captive_url" not in access:
            return False, None
        if origin not in self.tasks:
            await self._request_access(origin, request, decision)
        return False, str(access["captive_url"])

    async def _evaluate(self, request: dict[str, Any]) -> dict[str, Any]:
        response = await self.pdp.post("/access/v1/evaluation", json=request)
        if response.status_code != 200:
            log.warning("PDP answered %s: %s", response.status_code, response.text[:200])
            return {"decision": False}
        return dict(response.json())

    async def _request_access(
        self, origin: str, request: dict[str, Any], decision: dict[str, Any]
    ) -> None:
        context = decision["context"]
        access = context["access_request"]
        body = {
            **request,
            "context": {
                **request["context"],
                "business_justification": f"egress to {origin} (via the egress proxy)",
            },
            "denial": {
                "evaluation_id": context["evaluation_id"],
                "expires_at": access["expires_at"],
                "reason": context["reason"],
                "binding_token": access["binding_token"],
            },
        }
        response = await self.pdp.post(access["endpoint"], json=body)
        if response.status_code in (200, 202):
            self.tasks[origin] = str(response.json()["task"]["id"])
        else:
            log.warning("access request refused (%s): %s", response.status_code, response.text)

    async def _approval(self, origin: str) -> dict[str, Any] | None:
        """The approval of this origin's access request, once a person has approved it."""
        task_id = self.tasks.get(origin)
        if task_id is None:
            return None
        response = await self.pdp.get(f"/access/v1/requests/{task_id}")
        if response.status_code != 200:
            self.tasks.pop(origin, None)
            return None
        status = response.json()
        if status["task"]["status"] == "pending":
            return None
        if status["task"]["status"] != "approved":
            self.tasks.pop(origin, None)  # denied, cancelled or expired: a new denial asks again
            return None
        approval = dict(status["result"]["approval"])
        self.approvals[origin] = approval
        return approval


def _origin(target: str, *, tunnel: bool) -> tuple[str, str, int]:
    """(egress resource id, host, port) of a CONNECT target or an absolute URI."""
    if tunnel:
        host, _, port = target.rpartition(":")
        return f"{host}:{port}", host.strip("[]"), int(port)
    parts = urlsplit(target)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(target)
    port = parts.port or 80
    return f"http://{parts.hostname}:{port}", parts.hostname, port


def _answer(status: str, headers: dict[str, str] | None = None, body: str = "") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body.encode())}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError):
        writer.close()


async def handle(gate: Gate, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        writer.close()
        return
    request_line, _, rest = head.partition(b"\r\n")
    try:
        method, target, version = request_line.decode("latin-1").split(" ")
        tunnel = method == "CONNECT"
        origin, host, port = _origin(target, tunnel=tunnel)
    except ValueError:
        writer.write(_answer("400 Bad Request", body="a CONNECT or an absolute http URI\n"))
        await writer.drain()
        writer.close()
        return
    try:
        permitted, captive_url = await gate.decide(origin)
    except httpx.HTTPError as error:  # the PDP is unreachable: fail closed
        log.warning("PDP unreachable: %s", error)
        permitted, captive_url = False, None
    if not permitted:
        if captive_url is not None:
            answer = _answer(
                "511 Network Authentication Required",
                {"Link": f'<{captive_url}>; rel="captive-portal"', "Content-Type": "text/plain"},
                f"egress to {origin} needs approval: {captive_url}\n",
            )
        else:
            answer = _answer("403 Forbidden", {"Content-Type": "text/plain"}, "egress denied\n")
        writer.write(answer)
        await writer.drain()
        writer.close()
        return
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
    except OSError:
        writer.write(_answer("502 Bad Gateway"))
        await writer.drain()
        writer.close()
        return
    if tunnel:
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()
    else:  # forward the request in origin form
        path = urlsplit(target).path or "/"
        query = urlsplit(target).query
        line = f"{method} {path}{'?' + query if query else ''} {version}\r\n"
        upstream_writer.write(line.encode("latin-1") + rest)
    await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


async def serve(args: argparse.Namespace) -> None:
    agent = Agent(
        client_id=args.agent,
        instance_id=args.instance,
        mandate=open(args.mandate_file, encoding="ascii").read().strip(),
        jkt=args.jkt,
    )
    headers = {"Authorization": f"Bearer {args.pep_key}"}
    async with httpx.AsyncClient(base_url=args.pdp, headers=headers, timeout=10) as pdp:
        gate = Gate(pdp=pdp, agent=agent)
        server = await asyncio.start_server(lambda r, w: handle(gate, r, w), args.host, args.port)
        for sock in server.sockets:
            print(
                f"egress proxy listening on {sock.getsockname()[0]}:{sock.getsockname()[1]}",
                flush=True,
            )
        async with server:
            await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3128)
    parser.add_argument("--pdp", required=True, help="Mission Ledger's issuer URL")
    parser.add_argument("--pep-key", required=True, help="an API key with the pep role")
    parser.add_argument("--mandate-file", required=True, help="the agent's Mandate token")
    parser.add_argument("--jkt", required=True, help="thumbprint of the agent's proof key")
    parser.add_argument("--agent", required=True, help="the agent's client_id")
    parser.add_argument("--instance", required=True, help="the agent instance's id")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
