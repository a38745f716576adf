"""The Ledger application: one method per use case, on top of ``eventsourcing``.

* ``base``: construction, reads, and the single write path (concurrency, idempotency);
* ``governance``: proposals, approval, Mission lifecycle, containment, expansion, clock;
* ``cascades`` / ``mandating``: Execution Mandates and how Mission changes reach them;
* ``signals``: SSF streams (their SETs are produced by ``projections.signals``);
* ``credentials``: API keys;
* ``access``: access requests (requestable denials), their approvals and uses.
"""

from __future__ import annotations

from ledger.application.access import AccessRequestInput, AccessRequestUseCases
from ledger.application.base import (
    Changes,
    IdempotencyRequest,
    LedgerBase,
    TokenSigner,
    Written,
    new_id,
)
from ledger.application.credentials import CredentialUseCases, IssuedKey
from ledger.application.governance import GovernanceUseCases
from ledger.application.mandating import MandateUseCases
from ledger.application.signals import StreamUseCases

__all__ = [
    "AccessRequestInput",
    "Changes",
    "IdempotencyRequest",
    "IssuedKey",
    "Ledger",
    "LedgerBase",
    "TokenSigner",
    "Written",
    "new_id",
]


class Ledger(
    GovernanceUseCases,
    MandateUseCases,
    StreamUseCases,
    CredentialUseCases,
    AccessRequestUseCases,
):
    """The write side of Mission Ledger."""

    name = "Ledger"
