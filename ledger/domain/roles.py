"""Roles a credential can carry (SPEC section 4). ``admin`` passes every role check."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    AGENT = "agent"
    APPROVER = "approver"
    OPERATOR = "operator"
    PEP = "pep"
    AUDITOR = "auditor"
    ADMIN = "admin"
    #: An SSF receiver only: reads its own streams and their status and receives their SETs
    #: (SSE, poll); no decisions, search, introspection or stream changes. What the
    #: ``ssf.read`` OAuth scope grants (``pep`` may do all of it too).
    RECEIVER = "receiver"


#: Who may read SSF streams and receive their SETs.
STREAM_READERS = (Role.PEP, Role.RECEIVER)
