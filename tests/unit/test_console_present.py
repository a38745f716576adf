"""What the console makes of a form and of agent text (``api.console.present``,
``api.console.web``): an approval only narrows, agent text is inert, sign-in returns only
to console pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.console.present import changes, chosen_expiry, countdown, narrowed_authority
from api.console.web import safe_next, untrusted
from ledger.domain.errors import InvalidRequest

PROPOSED = [
    {
        "type": "mission_resource_access",
        "resource": "https://erp.example.com",
        "actions": ["invoices.read", "invoices.pay"],
        "constraints": {"max_amount": {"amount": "500", "currency": "EUR"}, "tenant": "acme"},
    },
    {"type": "mission_resource_access", "resource": "https://crm.example.com", "actions": ["a"]},
]


class Form(dict[str, object]):
    def getlist(self, name: str) -> list[object]:
        value = self.get(name, [])
        return value if isinstance(value, list) else [value]


def test_the_ticked_actions_and_a_lower_amount_are_granted_the_rest_kept() -> None:
    form = Form({"e0.action": ["invoices.read"], "e0.max_amount": "120", "e1.action": ["a"]})
    granted = narrowed_authority(PROPOSED, form)
    assert granted[0]["actions"] == ["invoices.read"]
    assert granted[0]["constraints"] == {
        "max_amount": {"amount": "120", "currency": "EUR"},
        "tenant": "acme",
    }
    assert granted[1] == PROPOSED[1]
    assert PROPOSED[0]["actions"] == ["invoices.read", "invoices.pay"]  # not modified


def test_an_entry_left_without_actions_is_not_granted() -> None:
    granted = narrowed_authority(PROPOSED, Form({"e0.action": ["invoices.pay"]}))
    assert [g["resource"] for g in granted] == ["https://erp.example.com"]
    assert changes(PROPOSED, granted)[-1].text == "not granted at all (https://crm.example.com)"


def test_an_action_that_was_not_asked_for_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="not asked for"):
        narrowed_authority(PROPOSED, Form({"e0.action": ["invoices.read", "invoices.delete"]}))


def test_nothing_left_to_grant_is_refused() -> None:
    with pytest.raises(InvalidRequest, match="deny the request instead"):
        narrowed_authority(PROPOSED, Form())


def test_the_requested_expiry_unchanged_is_none_and_a_chosen_one_is_utc() -> None:
    requested = datetime(2027, 1, 1, 12, 0, tzinfo=UTC)
    assert chosen_expiry(Form({"expires_at": "2027-01-01T12:00"}), requested) is None
    assert chosen_expiry(Form({"expires_at": "2026-12-24T08:30"}), requested) == (
        "2026-12-24T08:30:00Z"
    )
    with pytest.raises(InvalidRequest):
        chosen_expiry(Form({"expires_at": "tomorrow"}), requested)


@pytest.mark.parametrize(
    ("left", "text"),
    [
        (timedelta(days=2, hours=3, minutes=5), "2 d 3 h"),
        (timedelta(hours=4, minutes=12), "4 h 12 min"),
        (timedelta(seconds=20), "1 min"),
        (timedelta(seconds=-1), "expired"),
    ],
)
def test_the_countdown_reads_in_days_hours_and_minutes(left: timedelta, text: str) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert countdown(now, now + left) == text


def test_agent_text_is_escaped_and_invisible_characters_are_shown() -> None:
    shown = str(untrusted('<script>alert("x")</script>\u202eexe\u200b'))
    assert "<script>" not in shown
    assert "&lt;script&gt;" in shown
    assert "[U+202E]" in shown
    assert "[U+200B]" in shown
    assert "\u202e" not in shown


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/console/", "/v1/missions", "/console\\@evil", None],
)
def test_sign_in_returns_only_to_console_pages(target: str | None) -> None:
    assert safe_next(target) == "/console/"


def test_sign_in_returns_to_the_console_page_it_was_asked_for() -> None:
    assert safe_next("/console/missions/msn_1") == "/console/missions/msn_1"
