"""The MCP guard maps ``tools/call`` to an evaluation and a deny to a JSON-RPC error."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from mission_ledger_pep import AsyncPdpClient, McpGuard

CALL = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "tools/call",
    "params": {"name": "payments.send", "arguments": {"amount": "90.00", "note": "secret"}},
}
SUBJECT = {"type": "agent", "id": "a1"}


def pdp(answer: dict[str, Any], seen: list[dict[str, Any]]) -> AsyncPdpClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return httpx.Response(200, json=answer)

    return AsyncPdpClient("http://pdp.test", transport=httpx.MockTransport(handler))


def guard(answer: dict[str, Any], seen: list[dict[str, Any]]) -> McpGuard:
    return McpGuard(
        pdp(answer, seen),
        resource={"type": "mcp", "id": "https://tools.example.com"},
        arguments={"payments.send": ["amount", "currency"]},
    )


def test_tool_name_becomes_the_action_and_selected_arguments_its_properties() -> None:
    seen: list[dict[str, Any]] = []
    assert asyncio.run(guard({"decision": True}, seen).check(CALL, subject=SUBJECT)) is None
    assert seen[0]["action"] == {
        "name": "payments.send",
        "properties": {"tool": "payments.send", "amount": "90.00"},
    }
    assert seen[0]["resource"]["id"] == "https://tools.example.com"


def test_a_deny_is_a_json_rpc_error_carrying_the_reason() -> None:
    answer = {"decision": False, "context": {"reason": "parameter_violation"}}
    error = asyncio.run(guard(answer, []).check(CALL, subject=SUBJECT))
    assert error is not None
    assert error["id"] == 7
    assert error["error"]["code"] == -32001
    assert error["error"]["data"]["reason"] == "parameter_violation"


def test_other_methods_are_not_evaluated() -> None:
    seen: list[dict[str, Any]] = []
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    assert asyncio.run(guard({"decision": False}, seen).check(message, subject=SUBJECT)) is None
    assert seen == []


def test_an_unreachable_pdp_denies_the_tool_call() -> None:
    client = AsyncPdpClient("http://127.0.0.1:9", timeout=0.5)
    checker = McpGuard(client, resource={"type": "mcp", "id": "x"})
    error = asyncio.run(checker.check(CALL, subject=SUBJECT))
    assert error is not None
    assert error["error"]["data"]["reason"] == "pdp_unavailable"
