"""Mission Ledger PEP toolkit: what a gateway, MCP server or egress proxy embeds."""

from mission_ledger_pep.decision import PDP_UNAVAILABLE, Decision
from mission_ledger_pep.jwks import JwksCache
from mission_ledger_pep.mandates import MandateGuard, MandateRefused
from mission_ledger_pep.mcp import McpGuard
from mission_ledger_pep.middleware import MissionLedgerMiddleware
from mission_ledger_pep.pdp import AsyncPdpClient, PdpClient
from mission_ledger_pep.protocol import AccessRequestError
from mission_ledger_pep.sse import Event, SseParser
from mission_ledger_pep.subscriber import SignalSubscriber
from mission_ledger_pep.tokens import TokenRejected
from mission_ledger_pep.usage import UsageReporter

__all__ = [
    "PDP_UNAVAILABLE",
    "AccessRequestError",
    "AsyncPdpClient",
    "Decision",
    "Event",
    "JwksCache",
    "MandateGuard",
    "MandateRefused",
    "McpGuard",
    "MissionLedgerMiddleware",
    "PdpClient",
    "SignalSubscriber",
    "SseParser",
    "TokenRejected",
    "UsageReporter",
]
