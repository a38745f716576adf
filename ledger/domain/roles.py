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
