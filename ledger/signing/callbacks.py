"""HMAC signatures of access-request callbacks (docs/http-api.md, "Callbacks").

Each task with a callback has its own secret, derived from the key-encryption key (KEK)
and the task id, so no secret is stored anywhere and every replica computes the same one:
``secret = base64url(HMAC-SHA256(KEK, "mission-ledger/access-request-callback/v1" || 0x00 ||
task_id))``. It is returned once, in the 202 that creates the task.

A notification carries ``Signature: t=<unix seconds>,v1=<hex>`` where ``v1`` is
``HMAC-SHA256(key = the secret's ASCII bytes, message = t + "." + body)`` over the exact
body bytes sent. The receiver recomputes it, compares in constant time, and refuses a
``t`` too far from its clock (replay).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from ledger.signing.sealing import KeyEncryptionKey

SIGNATURE_HEADER = "Signature"
_LABEL = b"mission-ledger/access-request-callback/v1\x00"


def callback_secret(kek: KeyEncryptionKey, task_id: str) -> str:
    digest = hmac.new(kek.secret, _LABEL + task_id.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The ``Signature`` header's value for ``body`` sent at ``timestamp``."""
    message = str(timestamp).encode("ascii") + b"." + body
    mac = hmac.new(secret.encode("ascii"), message, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"
