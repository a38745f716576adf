"""A guard for MCP tool calls: a JSON-RPC ``tools/call`` becomes an AuthZEN evaluation
(tool name → ``action.name``, selected arguments → ``action.properties``, plus
``action.properties.tool`` for ``allowed_tools`` constraints); a deny becomes a JSON-RPC
error carrying the reason (and the ``access_request`` of a requestable denial)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mission_ledger_pep.decision import Decision
from mission_ledger_pep.pdp import AsyncPdpClient

#: JSON-RPC server-error code used for a denied tool call.
DENIED_CODE = -32001


class McpGuard:
    def __init__(
        self,
        pdp: AsyncPdpClient,
        *,
        resource: Mapping[str, Any],
        arguments: Mapping[str, Sequence[str]] | Sequence[str] = (),
        action_name: Callable[[str], str] = lambda tool: tool,
    ) -> None:
        """``arguments``: the argument names copied into ``action.properties``, for every
        tool (a sequence) or per tool name (a mapping)."""
        self.pdp = pdp
        self.resource = dict(resource)
        self.arguments = arguments
        self.action_name = action_name

    def evaluation(
        self,
        message: Mapping[str, Any],
        *,
        subject: Mapping[str, Any],
        context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """The AuthZEN request for a ``tools/call`` message; None for any other method."""
        if message.get("method") != "tools/call":
            return None
        params = message.get("params") or {}
        tool = str(params.get("name", ""))
        given = params.get("arguments") or {}
        wanted = (
            self.arguments.get(tool, ()) if isinstance(self.arguments, Mapping) else self.arguments
        )
        properties: dict[str, Any] = {"tool": tool}
        properties.update({name: given[name] for name in wanted if name in given})
        return {
            "subject": dict(subject),
            "action": {"name": self.action_name(tool), "properties": properties},
            "resource": dict(self.resource),
            "context": dict(context or {}),
        }

    async def check(
        self,
        message: Mapping[str, Any],
        *,
        subject: Mapping[str, Any],
        context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """None when the message may proceed; else the JSON-RPC error response to send."""
        request = self.evaluation(message, subject=subject, context=context)
        if request is None:
            return None
        decision = await self.pdp.evaluate(request)
        return None if decision.allowed else denial(message.get("id"), decision)


def denial(message_id: object, decision: Decision) -> dict[str, Any]:
    reason = decision.reason or "denied"
    data: dict[str, Any] = {"reason": reason}
    if decision.access_request is not None:
        data["access_request"] = dict(decision.access_request)
    return {
        "jsonrpc": "2.0",
        "id": message_id,
        "error": {"code": DENIED_CODE, "message": f"Tool call denied: {reason}", "data": data},
    }
