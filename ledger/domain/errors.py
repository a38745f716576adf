"""The one error tree of Mission Ledger.

Every failure the service reports on purpose is a subclass of ``LedgerError``;
``api.errors`` maps each class to an HTTP status and an RFC 9457 problem type
in one table. Nothing below this module knows about HTTP.

    LedgerError
    ├── NotAuthenticated          no credential, or not a valid one (401)
    ├── Forbidden                 a valid credential without the needed role (403)
    │   └── ApprovalNotAllowed    this approver may not approve this proposal (403)
    ├── InvalidRequest            malformed or out-of-range input (400)
    │   ├── AuthorityExceeded     a narrowing/delegation that would widen authority (400)
    │   ├── SubjectUnverified     a subject_token that does not verify, or none when required
    │   ├── NotRequestable        an access request for a denial no approval can lift (400)
    │   ├── InvalidDenialBinding  a binding_token that does not bind this request (400)
    │   └── StreamResourcesRequired  a PEP's SSF stream without ``resources``
    ├── NotFound                  unknown, or outside the caller's view (404)
    │   ├── UnknownTask           an access-request task (404 ``unknown_task``)
    │   └── UnknownDenial         an egress denial id (404 ``unknown_denial``)
    ├── Conflict                  illegal in the current state (409 ``conflict``)
    │   ├── StaleVersion          ``expected_version`` no longer current (409)
    │   ├── IdempotencyConflict   key reused with a different request (409)
    │   │   └── DuplicateRequest  the same, on the access-request endpoint (409)
    │   ├── NoMatchingCondition   a completion event that fires no terminal_when (409)
    │   ├── InvalidTaskState      a task already terminal (409 ``invalid_task_state``)
    │   ├── ApprovalUnusable      an approval past approved_until or out of uses
    │   ├── BudgetExceeded        a reservation would exceed max_budget or max_calls (409)
    │   └── ReservationExpired    a usage report for a reservation already expired (409)
    ├── Gone                      the object exists but has ended (410)
    │   ├── ExpiredDenial         a denial past its access_request.expires_at (410)
    │   └── TaskExpired           a pending task whose lifetime ran out (410)
    ├── TooManyRequests           rate or interval limits (429)
    └── Unavailable               the store or a read model is not ready (503)
        └── StaleState            a read model is behind the requested position (503)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self


@dataclass(frozen=True)
class FieldError:
    """One problem with one member of a request, located by a JSON Pointer (RFC 6901)."""

    pointer: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"pointer": self.pointer, "detail": self.message}


class LedgerError(Exception):
    """Base of every deliberate failure. ``code`` is the stable machine-readable name."""

    code: ClassVar[str] = "ledger_error"
    title: ClassVar[str] = "Ledger error"
    #: The problem ``type`` where a standard fixes it (the AuthZEN access-request profile);
    #: None for this service's own ``urn:mission-ledger:problem:<code>``.
    problem_type: ClassVar[str | None] = None

    def __init__(
        self,
        detail: str,
        *,
        errors: tuple[FieldError, ...] = (),
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.extensions: Mapping[str, Any] = dict(extensions or {})

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as its class, message and attributes, rebuilt without ``__init__`` (which
        some subclasses give keyword-only arguments): refusals cross the pipe from the Meter
        writer process as the outcomes of their operations."""
        return (_rebuilt, (type(self), self.args), self.__dict__)


def _rebuilt(cls: type[LedgerError], args: tuple[Any, ...]) -> LedgerError:
    return cls.__new__(cls, *args)


class NotAuthenticated(LedgerError):
    code = "unauthorized"
    title = "Authentication required"


class Forbidden(LedgerError):
    code = "forbidden"
    title = "Forbidden"


class ApprovalNotAllowed(Forbidden):
    """An approver rule refused the approval; ``rule`` (an extension member) names it."""

    code = "approval_not_allowed"
    title = "Approval not allowed"

    def __init__(self, detail: str, *, rule: str) -> None:
        super().__init__(f"{detail} (rule {rule})", extensions={"rule": rule})
        self.rule = rule


class InvalidRequest(LedgerError):
    code = "invalid_request"
    title = "Invalid request"

    @classmethod
    def at(cls, pointer: str, message: str) -> Self:
        """An error about one member, with the member's JSON Pointer in the detail."""
        return cls(f"{pointer or '/'}: {message}", errors=(FieldError(pointer, message),))


class AuthorityExceeded(InvalidRequest):
    code = "authority_exceeded"
    title = "Requested authority exceeds its ceiling"


class UnsupportedControl(InvalidRequest):
    """A control or constraint this release does not enforce (unknown, or known but not
    enforced): refused at submission, because an approver would be shown a bound that
    nothing enforces (SPEC 7.3 "no inert controls")."""

    code = "unsupported_control"
    title = "Control not enforced"


class SubjectUnverified(InvalidRequest):
    code = "subject_unverified"
    title = "Subject not verified"


class StreamResourcesRequired(InvalidRequest):
    """An SSF stream a PEP creates or reconfigures must name the ``resources`` it guards
    (SPEC 7.3 "signal scoping"); only an admin may run an unscoped stream."""

    code = "stream_resources_required"
    title = "Stream resources required"


class NotFound(LedgerError):
    code = "not_found"
    title = "Not found"


class Conflict(LedgerError):
    code = "conflict"
    title = "Conflict with the current state"


class StaleVersion(Conflict):
    code = "stale_version"
    title = "Stale version"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"
    title = "Idempotency key reused with a different request"


class NoMatchingCondition(Conflict):
    code = "no_matching_condition"
    title = "No terminal_when condition matches the completion event"


class BudgetExceeded(Conflict):
    """A reservation would take committed plus outstanding usage beyond a metered bound;
    ``control`` names it (``max_budget`` or ``max_calls``). Decisions answer it as a
    ``budget_exceeded`` denial."""

    code = "budget_exceeded"
    title = "Metered bound exceeded"

    def __init__(self, detail: str, *, control: str) -> None:
        super().__init__(detail, extensions={"control": control})
        self.control = control


class ReservationExpired(Conflict):
    code = "reservation_expired"
    title = "Reservation expired"


class Gone(LedgerError):
    code = "gone"
    title = "Gone"


class TooManyRequests(LedgerError):
    code = "too_many_requests"
    title = "Too many requests"


class Unavailable(LedgerError):
    code = "unavailable"
    title = "Service unavailable"


class StaleState(Unavailable):
    code = "stale_state"
    title = "Read model behind the requested position"


# --------------------------------------------------------------------------- access requests
# The AuthZEN Access Request and Approval profile (Draft 1, standards.md 2.7) fixes these
# problem types.

ACCESS_REQUEST_ERROR = "urn:openid:authzen:access-request:error:"


class CallbackRefused(InvalidRequest):
    """An access request's ``callback`` this service will not call: not https, or a host
    that is (or resolves to) a private, loopback, link-local or otherwise non-public
    address (server-side request forgery)."""

    code = "callback_refused"
    title = "Callback refused"


class NotRequestable(InvalidRequest):
    code = "not_requestable"
    title = "Denial not requestable"
    problem_type = ACCESS_REQUEST_ERROR + code


class InvalidDenialBinding(InvalidRequest):
    code = "invalid_denial_binding"
    title = "Invalid denial binding"
    problem_type = ACCESS_REQUEST_ERROR + code


class ExpiredDenial(Gone):
    code = "expired_denial"
    title = "Denial expired"
    problem_type = ACCESS_REQUEST_ERROR + code


class DuplicateRequest(IdempotencyConflict):
    code = "duplicate_request"
    title = "Duplicate request"
    problem_type = ACCESS_REQUEST_ERROR + code


class UnknownTask(NotFound):
    code = "unknown_task"
    title = "Unknown task"
    problem_type = ACCESS_REQUEST_ERROR + code


class UnknownDenial(NotFound):
    """An egress denial id (SPEC 7.2) that this service did not mint: unknown and forged
    ids are answered alike."""

    code = "unknown_denial"
    title = "Unknown denial"


class TaskExpired(Gone):
    code = "task_expired"
    title = "Task expired"
    problem_type = ACCESS_REQUEST_ERROR + code


class InvalidTaskState(Conflict):
    code = "invalid_task_state"
    title = "Invalid task state"
    problem_type = ACCESS_REQUEST_ERROR + code


class ApprovalUnusable(Conflict):
    """An approval that can permit nothing more (past ``approved_until``, out of uses, or not
    this task's). The decision point turns it into a denial; it never reaches HTTP as such."""

    code = "approval_expired"
    title = "Approval no longer usable"
