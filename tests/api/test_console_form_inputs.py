"""No value in a console form makes the service fail: each field of the approval review,
the denial, the lifecycle and the containment forms (hidden ones included: a browser sends
whatever the page's script or its user puts there), set to awkward text, is accepted or
refused with a clear answer, never a server error, on both stores."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import given, settings

from tests.api.conftest import Api
from tests.api.test_console_http import Person, proposal_with_amount
from tests.awkward_values import FUZZ, assert_answered, awkward_text

AWKWARD = awkward_text(
    "\u0000",
    "²",
    "-1",
    "9" * 30,
    "9" * 17,  # read as a number, beyond the I-JSON range JCS can digest
    "2026-12-05T10:00",
    "2026-12-05T10:00\n",
    "0001-01-01T00:00",
    "9999-12-31T23:59",
    "suspend\n",
    "https://erp.example.com\n",
    max_size=40,
)


class _Form(HTMLParser):
    """The fields (name, value) a browser would send of the form posting to ``action``:
    hidden and text inputs with their values, ticked boxes, the first radio button."""

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action = action
        self.inside = False
        self.fields: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.inside = found.get("action") == self.action
        elif self.inside and tag in {"input", "textarea"} and "name" in found:
            kind = found.get("type", "text")
            name = found["name"]
            if kind == "radio" and any(n == name for n, _ in self.fields):
                return
            if kind != "checkbox" or "checked" in found:
                self.fields.append((name, found.get("value", "reason")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False


def form_of(person: Person, page: str, action: str) -> list[tuple[str, str]]:
    response = person.get(page)
    assert response.status_code == 200, response.text
    parser = _Form(action)
    parser.feed(response.text)
    assert parser.fields, f"no form posting to {action} on {page}"
    return parser.fields


def with_value(fields: list[tuple[str, str]], name: str, value: str) -> dict[str, Any]:
    """The form with ``name`` set to ``value`` (added when the form has no such field)."""
    out: dict[str, Any] = {}
    for field, current in fields:
        out.setdefault(field, []).append(value if field == name else current)
    out.setdefault(name, [value])
    return out


@pytest.fixture(scope="module")
def people(store_api: Api) -> dict[str, Person]:
    return {who: Person(store_api, who) for who in ("approver", "operator")}


@pytest.fixture(scope="module")
def proposal(store_api: Api) -> str:
    return proposal_with_amount(store_api)


@pytest.mark.parametrize(
    "field", ["e0.action", "e0.max_amount", "expires_at", "approval_event_id", "csrf"]
)
@settings(FUZZ, max_examples=20)
@given(value=AWKWARD)
def test_no_approval_review_field_gives_a_server_error(
    people: dict[str, Person], proposal: str, field: str, value: str
) -> None:
    page = f"/console/proposals/{proposal}"
    action = f"{page}/review"
    form = with_value(form_of(people["approver"], page, action), field, value)
    assert_answered(people["approver"].post(action, form), field, value, problem=False)


@pytest.mark.parametrize("field", ["reason", "nonce"])
@settings(FUZZ, max_examples=15)
@given(value=AWKWARD)
def test_no_denial_field_gives_a_server_error(
    store_api: Api, people: dict[str, Person], field: str, value: str
) -> None:
    page = f"/console/proposals/{proposal_with_amount(store_api)}"
    action = f"{page}/deny"
    form = with_value(form_of(people["approver"], page, action), field, value)
    assert_answered(people["approver"].post(action, form), field, value, problem=False)


@pytest.mark.parametrize(
    ("action", "field"),
    [
        ("lifecycle", "operation"),
        ("lifecycle", "reason"),
        ("lifecycle", "expected_version"),
        ("lifecycle", "nonce"),
        ("lifecycle", "confirmed"),
        ("containment", "resource"),
        ("containment", "action"),
        ("containment", "reason"),
        ("containment", "expected_version"),
    ],
)
@settings(FUZZ, max_examples=15)
@given(value=AWKWARD)
def test_no_mission_change_field_gives_a_server_error(
    store_api: Api, people: dict[str, Person], action: str, field: str, value: str
) -> None:
    mission = store_api.mission()["id"]
    page = f"/console/missions/{mission}"
    target = f"{page}/{action}"
    fields = [*form_of(people["operator"], page, target), ("confirmed", "yes")]
    assert_answered(
        people["operator"].post(target, with_value(fields, field, value)),
        field,
        value,
        problem=False,
    )


@pytest.mark.parametrize("action", ["lifecycle", "containment"])
def test_the_forms_as_the_page_gives_them_are_accepted(
    store_api: Api, people: dict[str, Person], action: str
) -> None:
    """(So the examples above change one field of a form that would otherwise be taken.)"""
    mission = store_api.mission()["id"]
    page = f"/console/missions/{mission}"
    target = f"{page}/{action}"
    fields = [*form_of(people["operator"], page, target), ("confirmed", "yes")]
    response = people["operator"].post(target, with_value(fields, "reason", "checked"))
    assert response.status_code == 303, response.text
    assert store_api.get_mission(mission)["version"] > 1
