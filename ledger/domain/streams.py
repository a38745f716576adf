"""The Stream aggregate: one SSF 1.0 event stream of one receiver (a PEP).

A stream is configured by its receiver (``delivery``, ``events_requested``,
``description``) and completed by the transmitter (``stream_id``, ``iss``, ``aud``,
``events_supported``, ``events_delivered``, poll/SSE ``endpoint_url``). Its status is
``enabled`` (deliver), ``paused`` (hold, deliver in order on re-enable) or
``disabled`` (neither deliver nor hold). Subjects narrow or widen what it carries
(default: every Mission and Mandate). A stream with ``resources`` (SPEC 7.3 "signal
scoping") carries only the Missions and Mandates whose authority touches one of them.
Being events in the ledger, stream changes are audited and reach every replica through
the same log as everything else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from eventsourcing.domain import BaseAggregate

from ledger.domain.actors import Actor
from ledger.domain.errors import Conflict, Gone, InvalidRequest, TooManyRequests
from ledger.domain.events import TOPIC_PREFIX, LedgerCreated, LedgerEvent
from ledger.domain.resources import (
    EXACT,
    PREFIX,
    is_hierarchical,
    resources_meet,
    validate_resource,
)

PUSH = "urn:ietf:rfc:8935"
POLL = "urn:ietf:rfc:8936"
SSE = "urn:mission-ledger:delivery:sse"
DELIVERY_METHODS = (PUSH, POLL, SSE)

LIFECYCLE_CHANGE = "https://schemas.karlmcguinness.com/mission/lifecycle-change"
SESSION_REVOKED = "https://schemas.openid.net/secevent/caep/event-type/session-revoked"
TOKEN_CLAIMS_CHANGE = "https://schemas.openid.net/secevent/caep/event-type/token-claims-change"  # noqa: S105
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
STREAM_UPDATED = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"
#: The product's own event type for access-request task changes (SPEC 7.1: no standard one
#: exists yet). Delivered only to streams that request it in ``events_requested``.
ACCESS_REQUEST_CHANGE = "urn:mission-ledger:secevent:access-request-change"
#: What a stream that names no ``events_requested`` receives.
EVENTS_BY_DEFAULT = (LIFECYCLE_CHANGE, SESSION_REVOKED, TOKEN_CLAIMS_CHANGE)
EVENTS_SUPPORTED = (*EVENTS_BY_DEFAULT, ACCESS_REQUEST_CHANGE)
STREAM_ALGS = ("ES256", "EdDSA", "RS256")

RECEIVER_MEMBERS = frozenset(
    {"delivery", "events_requested", "description", "signing_alg", "resources"}
)
MAX_STREAM_RESOURCES = 256
TRANSMITTER_MEMBERS = frozenset(
    {"stream_id", "iss", "aud", "events_supported", "events_delivered", "min_verification_interval"}
)


class StreamStatus(StrEnum):
    ENABLED = "enabled"
    PAUSED = "paused"
    DISABLED = "disabled"


def stream_aggregate_id(stream_id: str) -> str:
    return f"stream:{stream_id}"


def is_loopback(host: str | None) -> bool:
    """``localhost`` or a loopback address."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _push_endpoint(url: object, *, allow_http_loopback: bool) -> str:
    """A push receiver's URL: https (plain http to a loopback host only when allowed)."""
    if not isinstance(url, str) or len(url) > 2048:
        raise InvalidRequest.at("/delivery/endpoint_url", "push delivery needs the receiver URL")
    try:
        parts = urlsplit(url)
    except ValueError:  # a bracketed host that is not an IP address, an unclosed bracket
        raise InvalidRequest.at("/delivery/endpoint_url", "must be an https URL") from None
    secure = parts.scheme == "https"
    local = parts.scheme == "http" and allow_http_loopback and is_loopback(parts.hostname)
    if not parts.netloc or not (secure or local):
        raise InvalidRequest.at("/delivery/endpoint_url", "must be an https URL")
    return url


def validate_receiver_config(
    value: Mapping[str, Any], *, allow_http_loopback: bool
) -> dict[str, Any]:
    """The receiver-supplied members, checked: returns them normalised (poll by default)."""
    config: dict[str, Any] = {}
    delivery = value.get("delivery")
    if delivery is None:
        delivery = {"method": POLL}
    if not isinstance(delivery, Mapping):
        raise InvalidRequest.at("/delivery", "must be an object")
    method = delivery.get("method")
    if method not in DELIVERY_METHODS:
        raise InvalidRequest.at("/delivery/method", f"must be one of {', '.join(DELIVERY_METHODS)}")
    unknown = set(delivery) - {"method", "endpoint_url", "authorization_header"}
    if unknown:
        raise InvalidRequest.at(f"/delivery/{sorted(unknown)[0]}", "is not a recognised member")
    normalised: dict[str, Any] = {"method": method}
    if method == PUSH:
        normalised["endpoint_url"] = _push_endpoint(
            delivery.get("endpoint_url"), allow_http_loopback=allow_http_loopback
        )
        header = delivery.get("authorization_header")
        if header is not None:
            if not isinstance(header, str) or not header or len(header) > 4096:
                raise InvalidRequest.at("/delivery/authorization_header", "must be a string")
            normalised["authorization_header"] = header
    elif "authorization_header" in delivery:
        raise InvalidRequest.at("/delivery/authorization_header", "is only for push delivery")
    config["delivery"] = normalised
    requested = value.get("events_requested")
    if requested is not None:
        if (
            not isinstance(requested, list)
            or len(requested) > 32
            or not all(isinstance(e, str) and 0 < len(e) <= 512 for e in requested)
        ):
            raise InvalidRequest.at("/events_requested", "must be an array of event-type URIs")
        config["events_requested"] = list(dict.fromkeys(requested))
    description = value.get("description")
    if description is not None:
        if not isinstance(description, str) or len(description) > 1024:
            raise InvalidRequest.at("/description", "must be a string of at most 1024 characters")
        config["description"] = description
    alg = value.get("signing_alg", "ES256")
    if alg not in STREAM_ALGS:
        raise InvalidRequest.at("/signing_alg", f"must be one of {', '.join(STREAM_ALGS)}")
    config["signing_alg"] = alg
    resources = value.get("resources")
    if resources is not None:
        config["resources"] = _validate_scope(resources)
    return config


def _validate_scope(value: object) -> list[str]:
    """The ``resources`` member: a non-empty array of absolute resource URIs (duplicates
    dropped, order kept)."""
    if not isinstance(value, list) or not value or len(value) > MAX_STREAM_RESOURCES:
        raise InvalidRequest.at(
            "/resources", f"must be an array of 1 to {MAX_STREAM_RESOURCES} resource URIs"
        )
    checked = [
        validate_resource(item, f"/resources/{index}", hierarchical=False)
        for index, item in enumerate(value)
    ]
    return list(dict.fromkeys(checked))


def scope_touches(scope: Sequence[str], touched: Iterable[tuple[str, str]]) -> bool:
    """Whether any of the ``(resource, resource_match)`` sets an authority names shares a
    URI with a stream's ``resources``. Each stream resource stands for itself and, when
    hierarchical (``scheme://authority/path``), everything below it; an authority entry
    over a prefix that contains a stream resource touches it too (that authority could
    act on it), so a PEP hears about every Mission and Mandate that could reach what it
    guards."""
    pairs = list(touched)
    return any(
        resources_meet(base, PREFIX if is_hierarchical(base) else EXACT, resource, match)
        for base in scope
        for resource, match in pairs
    )


def validate_subject(value: object, pointer: str = "/subject") -> dict[str, Any]:
    """An RFC 9493 / SSF subject identifier: an object with a ``format``."""
    if not isinstance(value, Mapping) or not isinstance(value.get("format"), str):
        raise InvalidRequest.at(pointer, "must be a subject identifier object with a format")
    if len(value) > 16:
        raise InvalidRequest.at(pointer, "has too many members")
    out: dict[str, Any] = {}
    for key, item in value.items():
        if key == "format":
            out[key] = item
        elif isinstance(item, Mapping):
            out[key] = validate_subject(item, f"{pointer}/{key}")
        elif isinstance(item, str) and len(item) <= 1024:
            out[key] = item
        elif isinstance(item, list) and all(isinstance(i, str) for i in item) and len(item) <= 32:
            out[key] = list(item)
        else:
            raise InvalidRequest.at(f"{pointer}/{key}", "must be a string or a subject identifier")
    if out["format"] != "complex" and len(out) < 2:
        raise InvalidRequest.at(pointer, "names no subject")
    return out


def subject_matches(event_subject: Mapping[str, Any], listed: Mapping[str, Any]) -> bool:
    """SSF matching: simple subjects match when identical; complex ones when every member
    present on both sides is identical; a simple subject matches a complex one it is a
    member of."""
    if event_subject == listed:
        return True
    if event_subject.get("format") == "complex" and listed.get("format") == "complex":
        shared = (set(event_subject) & set(listed)) - {"format"}
        return bool(shared) and all(event_subject[k] == listed[k] for k in shared)
    if event_subject.get("format") == "complex":
        return any(member == listed for key, member in event_subject.items() if key != "format")
    return False


class Stream(BaseAggregate[str]):
    TOPIC = TOPIC_PREFIX + "Stream"

    @dataclass(frozen=True)
    class Event(LedgerEvent):
        TOPIC = TOPIC_PREFIX + "Stream.Event"

    @dataclass(frozen=True)
    class Created(Event, LedgerCreated):
        TOPIC = TOPIC_PREFIX + "Stream.Created"
        stream_id: str
        owner: dict[str, Any]
        aud: str
        config: dict[str, Any]

        def apply(self, aggregate: Stream) -> None:
            aggregate.stream_id = self.stream_id
            aggregate.owner = dict(self.owner)
            aggregate.aud = self.aud
            aggregate.config = dict(self.config)
            aggregate.status = StreamStatus.ENABLED.value
            aggregate.status_reason = None
            aggregate.included = []
            aggregate.excluded = []
            aggregate.last_verification_at = None
            aggregate.deleted = False

    @dataclass(frozen=True)
    class Configured(Event):
        """The receiver replaced or updated its members (the full new set is recorded)."""

        TOPIC = TOPIC_PREFIX + "Stream.Configured"
        config: dict[str, Any]
        actor: dict[str, Any]

        def apply(self, aggregate: Stream) -> None:
            aggregate.config = dict(self.config)

    @dataclass(frozen=True)
    class StatusChanged(Event):
        TOPIC = TOPIC_PREFIX + "Stream.StatusChanged"
        status: str
        reason: str | None
        actor: dict[str, Any]
        by_owner: bool

        def apply(self, aggregate: Stream) -> None:
            aggregate.status = self.status
            aggregate.status_reason = self.reason

    @dataclass(frozen=True)
    class SubjectAdded(Event):
        TOPIC = TOPIC_PREFIX + "Stream.SubjectAdded"
        subject: dict[str, Any]

        def apply(self, aggregate: Stream) -> None:
            aggregate.excluded = [s for s in aggregate.excluded if s != self.subject]
            if self.subject not in aggregate.included:
                aggregate.included = [*aggregate.included, self.subject]

    @dataclass(frozen=True)
    class SubjectRemoved(Event):
        TOPIC = TOPIC_PREFIX + "Stream.SubjectRemoved"
        subject: dict[str, Any]

        def apply(self, aggregate: Stream) -> None:
            aggregate.included = [s for s in aggregate.included if s != self.subject]
            if self.subject not in aggregate.excluded:
                aggregate.excluded = [*aggregate.excluded, self.subject]

    @dataclass(frozen=True)
    class VerificationRequested(Event):
        TOPIC = TOPIC_PREFIX + "Stream.VerificationRequested"
        state: str | None

        def apply(self, aggregate: Stream) -> None:
            aggregate.last_verification_at = self.timestamp

    @dataclass(frozen=True)
    class Deleted(Event):
        TOPIC = TOPIC_PREFIX + "Stream.Deleted"
        actor: dict[str, Any]

        def apply(self, aggregate: Stream) -> None:
            aggregate.deleted = True

    if TYPE_CHECKING:
        stream_id: str
        owner: dict[str, Any]
        aud: str
        config: dict[str, Any]
        status: str
        status_reason: str | None
        included: list[dict[str, Any]]
        excluded: list[dict[str, Any]]
        last_verification_at: datetime | None
        deleted: bool

    # ------------------------------------------------------------------ commands

    @classmethod
    def create(
        cls,
        *,
        stream_id: str,
        owner: Actor,
        aud: str,
        config: Mapping[str, Any],
        now: datetime,
    ) -> Stream:
        return cls._create(
            cls.Created,
            id=stream_aggregate_id(stream_id),
            timestamp=now,
            stream_id=stream_id,
            owner=owner.to_json(),
            aud=aud,
            config=dict(config),
        )

    def require_live(self) -> None:
        if self.deleted:
            raise Gone(f"stream {self.stream_id} was deleted")

    def configure(self, config: Mapping[str, Any], *, actor: Actor, now: datetime) -> bool:
        self.require_live()
        if dict(config) == self.config:
            return False
        self.trigger_event(
            self.Configured, timestamp=now, config=dict(config), actor=actor.to_json()
        )
        return True

    def set_status(
        self, status: StreamStatus, *, reason: str | None, actor: Actor, now: datetime
    ) -> bool:
        self.require_live()
        if status.value == self.status and reason == self.status_reason:
            return False
        self.trigger_event(
            self.StatusChanged,
            timestamp=now,
            status=status.value,
            reason=reason,
            actor=actor.to_json(),
            by_owner=Actor.from_json(self.owner).key == actor.key,
        )
        return True

    def add_subject(self, subject: Mapping[str, Any], *, now: datetime) -> bool:
        self.require_live()
        if dict(subject) in self.included:
            return False
        if len(self.included) >= 1000:
            raise Conflict("a stream lists at most 1000 subjects")
        self.trigger_event(self.SubjectAdded, timestamp=now, subject=dict(subject))
        return True

    def remove_subject(self, subject: Mapping[str, Any], *, now: datetime) -> bool:
        self.require_live()
        if dict(subject) in self.excluded:
            return False
        if len(self.excluded) >= 1000:
            raise Conflict("a stream lists at most 1000 subjects")
        self.trigger_event(self.SubjectRemoved, timestamp=now, subject=dict(subject))
        return True

    def request_verification(
        self, state: str | None, *, now: datetime, min_interval: timedelta
    ) -> None:
        self.require_live()
        last = self.last_verification_at
        if last is not None and now - last < min_interval:
            wait = int((min_interval - (now - last)).total_seconds()) + 1
            raise TooManyRequests(
                f"verification may be requested once every {int(min_interval.total_seconds())} s",
                extensions={"retry_after": wait},
            )
        self.trigger_event(self.VerificationRequested, timestamp=now, state=state)

    def delete(self, *, actor: Actor, now: datetime) -> None:
        self.require_live()
        self.trigger_event(self.Deleted, timestamp=now, actor=actor.to_json())

    # ------------------------------------------------------------------ queries

    @property
    def events_delivered(self) -> list[str]:
        requested: Sequence[str] | None = self.config.get("events_requested")
        if requested is None:
            return list(EVENTS_BY_DEFAULT)
        return [e for e in EVENTS_SUPPORTED if e in requested]

    @property
    def resources(self) -> list[str] | None:
        """The resources the stream is scoped to (None: every Mission and Mandate)."""
        scope: list[str] | None = self.config.get("resources")
        return scope

    def carries(
        self,
        event_type: str,
        subject: Mapping[str, Any],
        touched: Iterable[tuple[str, str]] = (),
    ) -> bool:
        """Whether an event of this type about this subject goes into this stream now;
        ``touched`` are the ``(resource, resource_match)`` sets of the authority the event
        concerns (a scoped stream carries it only when one meets its ``resources``)."""
        if self.deleted or self.status == StreamStatus.DISABLED.value:
            return False
        if event_type not in self.events_delivered:
            return False
        scope = self.resources
        if scope is not None and not scope_touches(scope, touched):
            return False
        # Every subject is in by default ("ALL"); a removed subject is out until re-added.
        return not any(subject_matches(subject, s) for s in self.excluded)
