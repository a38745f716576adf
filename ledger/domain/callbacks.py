"""Access-request callbacks (SPEC 7.1 "Signals"; standards.md 2.4 ``callback``): where a
task's state change is announced, which addresses are never called, and the notification's
exact bytes.

A callback is ``{endpoint, state?, events?}``: ``endpoint`` an https URL without
credentials or fragment, ``state`` an opaque string echoed in every notification,
``events`` the terminal states to announce (all by default). Whether the host resolves to
a public address is judged where names are resolved (``api.workers.callbacks``), with
``address_problem`` below; this module does no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from ledger.domain.errors import CallbackRefused, InvalidRequest
from ledger.domain.instants import format_instant

#: The profile's terminal states a callback may ask for (``failed`` and ``partial`` never
#: happen here: a task is never bundled and never fails on its own).
CALLBACK_EVENTS = ("approved", "denied", "expired", "cancelled", "failed", "partial")
MAX_STATE_LENGTH = 1024


@dataclass(frozen=True)
class Callback:
    endpoint: str
    state: str | None
    events: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "state": self.state, "events": list(self.events)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Callback:
        return cls(str(value["endpoint"]), value.get("state"), tuple(value["events"]))


def parse_callback(endpoint: str, state: str | None, events: Sequence[str] | None) -> Callback:
    """The callback as requested, its URL's shape checked (``CallbackRefused``)."""
    try:
        parts = urlsplit(endpoint)
    except ValueError:  # a bracketed host that is not an IP address, an unclosed bracket
        raise CallbackRefused("callback.endpoint is not a URL") from None
    if parts.scheme != "https":
        raise CallbackRefused(f"callback.endpoint must be an https URL, not {parts.scheme!r}")
    try:
        host, _ = parts.hostname, parts.port
    except ValueError:
        raise CallbackRefused("callback.endpoint has an invalid port") from None
    if not host:
        raise CallbackRefused("callback.endpoint has no host")
    if parts.username is not None or parts.password is not None:
        raise CallbackRefused("callback.endpoint may not carry credentials")
    if parts.fragment:
        raise CallbackRefused("callback.endpoint may not carry a fragment")
    if state is not None and len(state) > MAX_STATE_LENGTH:
        raise InvalidRequest.at("/callback/state", f"at most {MAX_STATE_LENGTH} characters")
    chosen = tuple(dict.fromkeys(events)) if events is not None else CALLBACK_EVENTS
    unknown = [e for e in chosen if e not in CALLBACK_EVENTS]
    if unknown or not chosen:
        raise InvalidRequest.at("/callback/events", f"must be among {list(CALLBACK_EVENTS)}")
    return Callback(endpoint, state, chosen)


def address_problem(address: str) -> str | None:
    """Why an IP address must not be called back (``"loopback"``, ``"private"``,
    ``"link-local"``, ...), or None for a public unicast address. An IPv4-mapped IPv6
    address is judged as the IPv4 address it carries."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for problem, flagged in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flagged:
            return problem
    return None if ip.is_global else "not globally routable"


def notification(
    *,
    task_id: str,
    status: str,
    status_endpoint: str,
    approval_id: str | None,
    state: str | None,
    occurred_at: datetime,
) -> bytes:
    """The JSON body announcing one state change: the bytes signed and sent (every retry
    sends the same ones). Only a notification: the PEP reads the task at
    ``status_endpoint`` for the enforceable ``result``."""
    body: dict[str, Any] = {
        "id": f"{task_id}.{status}",
        "task": {"id": task_id, "status": status, "status_endpoint": status_endpoint},
        "occurred_at": format_instant(occurred_at),
    }
    if approval_id is not None:
        body["approval_id"] = approval_id
    if state is not None:
        body["state"] = state
    return orjson.dumps(body)
