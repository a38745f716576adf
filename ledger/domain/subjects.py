"""Whose Mission it is, and who may approve it (SPEC 7.3 "Subject and approver").

A Mission's subject is ``asserted`` when the agent presented a ``subject_token`` that the
API verified (an OIDC ID token or ID-JAG from a trusted issuer: this module receives only
its verified claims), and ``attested`` otherwise: the approving principal answers for it.

At approval the approver must meet the Intent's ``controls.acr`` (exact string match; an
API-key approver meets none) and, for write or irreversible authority, must not be the
subject. Authority is read-only only when every action of every granted entry is a literal
ending in ``.read``, ``.list`` or ``.get``; a family (``name.*``) is never read-only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ledger.domain.actions import is_family
from ledger.domain.errors import ApprovalNotAllowed, InvalidRequest, SubjectUnverified

ASSERTED = "asserted"
ATTESTED = "attested"
READ_ONLY_SUFFIXES = (".read", ".list", ".get")

#: Names of the approver rules, the ``rule`` member of a 403 ``approval_not_allowed``.
RULE_ACR_NOT_MET = "acr_not_met"
RULE_APPROVER_IS_SUBJECT = "approver_is_subject"
RULE_APPROVER_IS_REQUESTER = "approver_is_requester"


@dataclass(frozen=True)
class SubjectAssertion:
    """The verified claims of a ``subject_token``."""

    iss: str
    sub: str

    def to_json(self) -> dict[str, str]:
        return {"iss": self.iss, "sub": self.sub}


@dataclass(frozen=True)
class PrincipalIdentity:
    """A principal as these rules see it: JWT ``{iss, sub}`` (and ``acr``), or for an API
    key ``{iss: <ledger issuer>, sub: <key name>}`` with no ``acr``."""

    iss: str
    sub: str
    acr: str | None = None

    def to_json(self) -> dict[str, str]:
        return {"iss": self.iss, "sub": self.sub}

    def is_subject(self, subject: Mapping[str, Any]) -> bool:
        return subject.get("iss") == self.iss and subject.get("sub") == self.sub


@dataclass(frozen=True)
class EstablishedSubject:
    """The subject a proposal records, and how it is known."""

    subject: dict[str, Any]
    provenance: str


def establish_subject(
    claimed: Mapping[str, Any] | None,
    assertion: SubjectAssertion | None,
    *,
    require_assertion: bool,
    inherited_provenance: str | None = None,
) -> EstablishedSubject:
    """The subject of a new proposal: the verified assertion's (a claimed subject must match
    it), else the claimed one, ``attested`` unless assertions are required.

    ``inherited_provenance`` is that of an expansion's predecessor Mission, whose subject the
    successor keeps.
    """
    if assertion is not None:
        if claimed is not None and dict(claimed) != assertion.to_json():
            raise SubjectUnverified.at(
                "/subject", "does not match the iss and sub of the subject_token"
            )
        return EstablishedSubject(assertion.to_json(), ASSERTED)
    if claimed is None:
        if require_assertion:
            raise SubjectUnverified(
                "this ledger requires a verified subject_token (require_subject_assertion)"
            )
        raise InvalidRequest.at("/subject", "is required without a subject_token")
    provenance = inherited_provenance or ATTESTED
    if require_assertion and provenance != ASSERTED:
        raise SubjectUnverified(
            "this ledger requires a verified subject_token (require_subject_assertion)"
        )
    return EstablishedSubject(dict(claimed), provenance)


def is_read_only_action(action: str) -> bool:
    return not is_family(action) and action.endswith(READ_ONLY_SUFFIXES)


def grants_write(actions: Iterable[str]) -> bool:
    """Whether any of the actions may write (or do something irreversible)."""
    return not all(is_read_only_action(action) for action in actions)


def check_approver(
    approver: PrincipalIdentity,
    *,
    subject: Mapping[str, Any],
    required_acr: str | None,
    actions: Iterable[str],
) -> None:
    """Refuse with 403 ``approval_not_allowed`` naming the first rule the approver breaks."""
    if required_acr is not None and approver.acr != required_acr:
        raise ApprovalNotAllowed(
            f"the Intent requires approval at acr {required_acr!r}; this approver's acr is "
            f"{approver.acr!r} (an API key has none)",
            rule=RULE_ACR_NOT_MET,
        )
    if approver.is_subject(subject) and grants_write(actions):
        raise ApprovalNotAllowed(
            "the subject may not approve write authority for itself",
            rule=RULE_APPROVER_IS_SUBJECT,
        )


def check_access_approver(
    approver: PrincipalIdentity,
    *,
    requesters: Iterable[Mapping[str, Any]],
    subject: Mapping[str, Any],
    required_acr: str | None,
    actions: Iterable[str],
) -> None:
    """The rules of ``check_approver`` (the Mission's ``controls.acr``; the subject never
    approves write authority for itself), and (SPEC 7.1) never the agent or the principal
    that requested the access (``requesters``: their ``{iss, sub}``)."""
    check_approver(approver, subject=subject, required_acr=required_acr, actions=actions)
    if any(approver.is_subject(requester) for requester in requesters):
        raise ApprovalNotAllowed(
            "the agent, or the principal that requested the access, may not approve it",
            rule=RULE_APPROVER_IS_REQUESTER,
        )
