"""Who may do what: every role and ownership rule of the governance API, in one file.

Two kinds of rule, both pure (no I/O), and ``admin`` passes every one:

* **Gates** say which roles may call an operation at all; a caller without one gets 403.
  Routes declare their gate (``api/routes/gate.py``), which is checked before the request
  body is read, so a caller without the role learns nothing from how its body is judged.
* **Object rules** say whether a caller may see or act on one Proposal, Mission or
  Mandate. A caller who may not gets the same 404 as for an unknown id (no oracle), except
  where the rule is about what the caller asks for rather than what exists
  (``may_submit_for``: 403).

The SSF stream rules (``pep`` role, ``ssf.manage`` scope, stream ownership) live with the
SSF routes, except which streams may go unscoped (``may_run_unscoped_stream``).
"""

from __future__ import annotations

from dataclasses import dataclass

from api.auth import Principal
from ledger.domain.access_requests import AccessRequest
from ledger.domain.actors import Actor
from ledger.domain.mandates import ExecutionMandate
from ledger.domain.missions import Mission
from ledger.domain.proposals import Proposal
from ledger.domain.roles import Role
from ledger.domain.states import Operation


@dataclass(frozen=True)
class Gate:
    """The roles that may call an operation at all."""

    roles: tuple[Role, ...]

    def allows(self, caller: Principal) -> bool:
        return caller.has(*self.roles)

    def check(self, caller: Principal) -> None:
        """403 (``Forbidden``) unless the caller holds one of the roles."""
        caller.require(*self.roles)


def _gate(*roles: Role) -> Gate:
    return Gate(roles)


# ---------------------------------------------------------------------- gates

# Proposals
SUBMIT_PROPOSAL = _gate(Role.AGENT)
READ_PROPOSALS = _gate(Role.APPROVER, Role.AGENT)  # agents: their own
DECIDE_PROPOSAL = _gate(Role.APPROVER)  # approve, deny
CANCEL_PROPOSAL = _gate(Role.AGENT)  # their own

# Missions
LIST_MISSIONS = _gate(Role.OPERATOR, Role.AUDITOR)
READ_MISSION = _gate(Role.OPERATOR, Role.AUDITOR, Role.AGENT)  # agents: their own
READ_MISSION_EVENTS = _gate(Role.AUDITOR, Role.OPERATOR)
CHANGE_LIFECYCLE = _gate(Role.OPERATOR)  # revoke, suspend, complete
RESUME_MISSION = _gate(Role.ADMIN)  # the elevated operation
CONTAIN_MISSION = _gate(Role.OPERATOR)
PROPOSE_EXPANSION = _gate(Role.AGENT)  # their own Mission
REPORT_COMPLETION_EVENT = _gate(Role.OPERATOR, Role.AGENT)  # agents: their own Mission

# Execution Mandates
ISSUE_MANDATE = _gate(Role.AGENT)  # under their own Mission
DELEGATE_MANDATE = _gate(Role.AGENT)  # from a Mandate they hold
NARROW_MANDATE = _gate(Role.OPERATOR, Role.AGENT)  # agents: a Mandate they hold
REVOKE_MANDATE = _gate(Role.OPERATOR)
REVOKE_INSTANCE = _gate(Role.OPERATOR)
READ_MANDATE = _gate(Role.OPERATOR, Role.AUDITOR, Role.AGENT)  # agents: a Mandate they hold
INTROSPECT_MANDATE = _gate(Role.PEP)

# Decisions, Mission Status, operations
DECIDE_ACCESS = _gate(Role.PEP)  # AuthZEN evaluation(s) and search
REPORT_USAGE = _gate(Role.PEP)  # the outcome of a metered permit (POST /v1/usage)
READ_MISSION_STATUS = _gate(Role.PEP, Role.OPERATOR, Role.AUDITOR, Role.AGENT)  # agents: own
READ_METRICS = _gate(Role.OPERATOR, Role.AUDITOR)
READ_AUDIT_LOG = _gate(Role.AUDITOR)
EXPORT_EVIDENCE = _gate(Role.AUDITOR)  # evidence bundles (signed tar of events, tokens, SETs)


# Console (SPEC 7.5): pages for people
INBOX = DECIDE_PROPOSAL
CONSOLE_MISSION = _gate(Role.OPERATOR, Role.AUDITOR, Role.APPROVER)  # approvers: theirs
CHAIN_STATUS = READ_AUDIT_LOG

#: The roles of people: only credentials holding nothing else sign in to the console.
PEOPLE = frozenset({Role.APPROVER, Role.OPERATOR, Role.AUDITOR, Role.ADMIN})

# Access requests (AuthZEN Access Request and Approval profile, SPEC 7.1)
SUBMIT_ACCESS_REQUEST = _gate(Role.PEP, Role.AGENT)  # agents: for themselves
READ_ACCESS_REQUEST_TASK = _gate(  # a portable handle (may_see_task)
    Role.PEP, Role.AGENT, Role.APPROVER, Role.OPERATOR, Role.AUDITOR
)
CANCEL_ACCESS_REQUEST = _gate(Role.PEP, Role.AGENT)  # the requester
LIST_ACCESS_REQUESTS = _gate(Role.APPROVER, Role.OPERATOR, Role.AUDITOR)
DECIDE_ACCESS_REQUEST = _gate(Role.APPROVER)  # approve, deny
READ_DECISION_LOG = _gate(Role.AUDITOR)
READ_EGRESS_DENIAL = _gate(Role.PEP, Role.AGENT)  # RFC 8908 Captive Portal API (SPEC 7.2)


def lifecycle_gate(operation: Operation) -> Gate:
    """Resuming a suspended Mission is the elevated operation (admin); the rest, operators."""
    return RESUME_MISSION if operation is Operation.RESUME else CHANGE_LIFECYCLE


# ---------------------------------------------------------------------- proposals


def sees_every_proposal(caller: Principal) -> bool:
    """Approvers see the whole inbox; an agent, only its own proposals."""
    return caller.has(Role.APPROVER)


def may_submit_for(caller: Principal, client_id: str) -> bool:
    """An agent submits proposals only for its own ``client_id``."""
    return caller.owns_client(client_id)


def may_see_proposal(caller: Principal, proposal: Proposal) -> bool:
    return sees_every_proposal(caller) or caller.owns_client(proposal.client_id)


def may_cancel_proposal(caller: Principal, proposal: Proposal) -> bool:
    """Only the proposing agent withdraws its proposal."""
    return caller.owns_client(proposal.client_id)


# ---------------------------------------------------------------------- missions


def may_see_mission(caller: Principal, mission: Mission) -> bool:
    """Operators and auditors see every Mission; an agent, its own."""
    return caller.has(Role.OPERATOR, Role.AUDITOR) or caller.owns_client(mission.client_id)


def approved(caller: Principal, mission: Mission) -> bool:
    """The caller is the principal recorded as the Mission's approver."""
    return Actor.from_json(mission.approver).key == approver_key_of(caller)


def approver_key_of(caller: Principal) -> str:
    """The identity ``approved`` compares (the mission board's ``approver_key``)."""
    return caller.actor().key


def may_see_mission_in_console(caller: Principal, mission: Mission) -> bool:
    """In the console approvers also see the Missions they approved (SPEC 7.5)."""
    return may_see_mission(caller, mission) or (
        caller.has(Role.APPROVER) and approved(caller, mission)
    )


def may_sign_in_to_console(roles: frozenset[Role]) -> bool:
    """Only people sign in: a credential with a role, every one a person's (an agent, PEP or
    stream receiver credential is refused, whatever else it holds)."""
    return bool(roles) and roles <= PEOPLE


def may_propose_expansion(caller: Principal, mission: Mission) -> bool:
    return caller.owns_client(mission.client_id)


def may_report_completion_event(caller: Principal, mission: Mission) -> bool:
    """Operators, or the Mission's own agent, report the events that discharge it."""
    return caller.has(Role.OPERATOR) or caller.owns_client(mission.client_id)


def may_read_mission_status(caller: Principal, mission: Mission) -> bool:
    """PEPs, operators and auditors read any Mission's status; an agent, its own."""
    return caller.has(Role.PEP, Role.OPERATOR, Role.AUDITOR) or caller.owns_client(
        mission.client_id
    )


# ---------------------------------------------------------------------- mandates


def may_issue_mandate(caller: Principal, mission: Mission) -> bool:
    """Root Mandates go to the Mission's own agent, who asks for them."""
    return caller.owns_client(mission.client_id)


def holds(caller: Principal, mandate: ExecutionMandate) -> bool:
    """The caller is the agent holding the Mandate."""
    return caller.owns_client(str(mandate.holder.get("client_id")))


def may_delegate(caller: Principal, parent: ExecutionMandate) -> bool:
    return holds(caller, parent)


def may_narrow(caller: Principal, mandate: ExecutionMandate) -> bool:
    return caller.has(Role.OPERATOR) or holds(caller, mandate)


def may_see_mandate(caller: Principal, mandate: ExecutionMandate) -> bool:
    return caller.has(Role.OPERATOR, Role.AUDITOR) or holds(caller, mandate)


# ---------------------------------------------------------------------- access requests


def may_request_access_for(caller: Principal, client_id: str) -> bool:
    """A PEP asks for any agent it enforces for; an agent only for itself (403 otherwise)."""
    return caller.has(Role.PEP) or caller.owns_client(client_id)


def may_see_task(caller: Principal, task: AccessRequest) -> bool:
    """Task handles are portable: the requester, the Mission's agent, any PEP, and the
    people who decide or oversee (approver, operator, auditor); anyone else gets the same
    404 as for an unknown task."""
    return (
        caller.has(Role.PEP, Role.APPROVER, Role.OPERATOR, Role.AUDITOR)
        or caller.scope == task.requester_scope
        or caller.owns_client(task.client_id)
    )


def may_cancel_task(caller: Principal, task: AccessRequest) -> bool:
    """Only the principal that requested the access withdraws it (admins: any)."""
    return caller.is_admin or caller.scope == task.requester_scope


# ---------------------------------------------------------------------- SSF streams


def may_run_unscoped_stream(caller: Principal) -> bool:
    """A stream without ``resources`` carries every Mission and Mandate: only an admin may
    run one; a PEP's stream names the resources it guards (SPEC 7.3 "signal scoping")."""
    return caller.is_admin
