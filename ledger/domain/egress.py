"""Egress denials (SPEC 7.2; RFC 8908 Captive Portal API, captive-portal egress proposal).

An evaluation whose ``resource.type`` is ``egress`` asks whether an agent may open a
connection to ``resource.id``: ``https://host[:port]``, or ``host:port`` as a forward proxy
sees it in a ``CONNECT`` (read as ``https://host:port``; the default port then drops out in
normalisation, so ``host:443`` is ``https://host``).

A requestable egress denial carries ``context.access_request.captive_url``: the denial's own
Captive Portal API URL, ``{issuer}/v1/egress/denials/{denial_id}``. The ``denial_id`` is the
denial's signed binding token itself: unique per denial (its ``jti``), minted with the
decision without touching the database, and readable by every replica, which verifies the
signature and finds the access request made with it (``task_id_for(jti)``) — no table of
denials. A forged or altered id does not verify and is unknown.

The captive state, from the access request made with the denial (if any):
not approved (no request yet, pending, denied, cancelled, expired) → captive; approved →
not captive until ``approved_until`` or until its uses are spent, captive again after.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

#: ``resource.type`` of an egress evaluation.
EGRESS = "egress"
#: Where an egress denial's Captive Portal API lives, below the issuer.
EGRESS_DENIALS_PATH = "/v1/egress/denials/"
#: Where a person decides an access request, below the issuer (the console).
CONSOLE_ACCESS_REQUEST_PATH = "/console/access-requests/"
#: Media type of the Captive Portal API (RFC 8908 section 5).
CAPTIVE_JSON = "application/captive+json"

_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def egress_uri(resource_id: str) -> str:
    """The URI an egress resource id stands for: ``host:port`` (a ``CONNECT`` target) is
    ``https://host:port``; a URI is itself."""
    return resource_id if "://" in resource_id else "https://" + resource_id


def captive_url(issuer: str, binding_token: str) -> str:
    """The Captive Portal API URL of an egress denial (its ``denial_id`` is its token)."""
    return issuer + EGRESS_DENIALS_PATH + binding_token


def user_portal_url(issuer: str, task_id: str) -> str:
    """The console page of the access request made with a denial: https, unless the issuer
    itself is plain http on a loopback host (a development set-up)."""
    parts = urlsplit(issuer)
    if parts.scheme == "http" and parts.hostname not in _LOOPBACK_HOSTS:
        issuer = "https://" + issuer.removeprefix("http://")
    return issuer + CONSOLE_ACCESS_REQUEST_PATH + task_id


@dataclass(frozen=True)
class CaptiveState:
    """Whether the agent is still held at the portal, and for how long it is not."""

    captive: bool
    seconds_remaining: int | None = None


def captive_state(approval: dict[str, Any] | None, uses: int, now: datetime) -> CaptiveState:
    """The captive state under the approval of the denial's access request (``None`` while
    there is none), ``uses`` of it already spent."""
    if approval is None:
        return CaptiveState(captive=True)
    until: datetime = approval["approved_until"]
    if now >= until or uses >= int(approval["max_uses"]):
        return CaptiveState(captive=True)
    return CaptiveState(captive=False, seconds_remaining=math.floor((until - now).total_seconds()))
