"""Authority in plain language (``ledger.domain.rendering``): nothing an approver consents to
is left out or softened."""

from __future__ import annotations

from ledger.domain.authority import parse_entry
from ledger.domain.rendering import (
    action_text,
    constraint_text,
    describe_entry,
    describe_terms,
)

ERP = "https://erp.example.com/"


def entry(**members: object) -> str:
    raw = {"type": "mission_resource_access", "resource": ERP, "actions": ["invoices.read"]}
    raw.update(members)
    return describe_entry(parse_entry(raw, ""))


def test_a_family_is_spelled_out_as_open_ended() -> None:
    text = action_text("invoices.*")
    assert text.startswith("ANY action in the invoices.* family")
    assert "invoices.something" in text
    assert "added later" in text


def test_a_literal_action_is_itself() -> None:
    assert action_text("invoices.read") == "invoices.read"


def test_a_prefix_resource_covers_everything_below_and_an_exact_one_only_itself() -> None:
    assert f"{ERP} and everything below it" in entry(resource_match="prefix")
    assert f"{ERP} (this resource only)" in entry()


def test_every_constraint_is_shown_with_its_bound() -> None:
    text = entry(
        constraints={
            "max_amount": {"amount": "500.00", "currency": "EUR"},
            "tenant": "acme",
            "recipient_domain": "example.com",
            "data_classification": ["public", "internal"],
            "allowed_tools": ["erp"],
            "time_window": {"not_before": "2026-01-01T00:00:00Z"},
            "resource_issued_after": "2025-01-01T00:00:00Z",
            "requires_action_approval": False,
            "terminal_when": [{"event_type": "invoice.paid", "discharge_policy": "all"}],
        }
    )
    for phrase in (
        "each amount at most 500.00 EUR",
        "only in tenant acme",
        "only to recipients at example.com or its subdomains",
        "only data classified public or internal",
        "only with the tools erp",
        "only from 2026-01-01T00:00:00Z on",
        "only resources issued after 2025-01-01T00:00:00Z",
        "no per-action approval needed",
        "ends when invoice.paid (discharge policy all) is reported",
    ):
        assert phrase in text, phrase


def test_a_constraint_without_words_is_shown_as_stored() -> None:
    assert (
        constraint_text("future_bound", {"b": 1, "a": [2]}) == 'future_bound = {"a": [2], "b": 1}'
    )


def test_delegation_is_stated_either_way() -> None:
    assert entry().endswith("not delegable.")
    text = entry(delegation={"max_depth": 2, "allowed_delegates": [{"client_id": "helper"}]})
    assert "delegable up to depth 2 to client_id=helper" in text


def test_the_terms_name_the_expiry_and_every_control() -> None:
    terms = describe_terms(
        expires_at="2027-01-01T00:00:00Z", controls={"acr": "mfa", "max_derivations": 5}
    )
    assert terms == [
        "The Mission ends at 2027-01-01T00:00:00Z at the latest.",
        "The approver must have signed in at assurance level (acr) mfa.",
        "At most 5 Mandates may be derived from the Mission.",
    ]
