"""Issue 14's acceptance flow in headless Chromium, on both backends: people sign in through
a real OpenID Provider; a proposal submitted over the API appears in the inbox; the approver
narrows an action and an amount and approves; the Mission page shows the narrowed authority
and the event; an operator revokes with a reason and a confirmation; a second tab showing
the Mission updates by itself; sign-out ends the session and the back button shows nothing
private."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import BACKENDS
from tests.console.harness import Stack, running_stack, sign_in_with_oidc

pytestmark = pytest.mark.xdist_group("console-acceptance")

#: How long a test waits for something that should happen by itself (not a speed claim).
PATIENCE_MS = 10_000


@pytest.fixture(scope="module", params=BACKENDS)
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    yield from running_stack(request, tmp_path_factory, request.param)


def approve_narrowed(page: Page, stack: Stack, proposal_id: str) -> str:
    """From the inbox: open the request, untick invoices.pay, lower the amount to 200,
    review, approve. Returns the new Mission's id."""
    page.goto(f"{stack.url}/console/inbox")
    page.click(f"a[href='/console/proposals/{proposal_id}'].button")
    page.uncheck("input[name='e0.action'][value='invoices.pay']")
    page.fill("input[name='e0.max_amount']", "200")
    page.click("button:has-text('Review approval')")
    expect(page.locator("body")).to_contain_text("removed invoices.pay")
    expect(page.locator("body")).to_contain_text("amount lowered from 500 to 200 EUR")
    page.click("button:has-text('Approve')")
    page.wait_for_url(f"{stack.url}/console/missions/msn_*")
    return page.url.split("/")[-1].split("?")[0]


def test_sign_in_narrow_approve_revoke_live_update_and_sign_out(
    stack: Stack, new_context: Any
) -> None:
    proposal_id = stack.submit("Reconcile the Q3 invoices")

    # The approver signs in through the provider; the proposal is in the inbox.
    approver = sign_in_with_oidc(new_context(), stack, "ana")
    assert approver.url == f"{stack.url}/console/inbox"
    expect(approver.locator(f"a[href='/console/proposals/{proposal_id}']").first).to_be_visible()
    mission_id = approve_narrowed(approver, stack, proposal_id)
    effective = approver.locator("section[aria-labelledby='effective']")
    expect(effective).to_contain_text("invoices.read")
    expect(effective).not_to_contain_text("invoices.pay")
    expect(effective).to_contain_text("each amount at most 200 EUR")
    mission = stack.mission(mission_id)
    assert mission["authorization_details"][0]["actions"] == ["invoices.read", "reports.*"]
    assert mission["approver"]["type"] == "oauth"
    assert mission["approver"]["name"] == "ana"
    assert mission["approver"]["iss"] == stack.provider.issuer

    # An operator finds it and sees the narrowed authority and the approval event.
    operators = new_context()
    operator = sign_in_with_oidc(operators, stack, "oscar")
    operator.goto(f"{stack.url}/console/missions?state=active")
    operator.click(f"a[href='/console/missions/{mission_id}']")
    expect(operator.locator("#mission-state")).to_have_text("active")
    expect(operator.locator("#timeline-list")).to_contain_text("Approved: the Mission began")
    expect(operator.locator("#timeline-list")).to_contain_text(
        f"ana (approver) at {stack.provider.issuer}"
    )
    expect(operator.locator("section[aria-labelledby='effective']")).not_to_contain_text(
        "invoices.pay"
    )

    # A second tab shows the same Mission, and will not be reloaded.
    watcher = operators.new_page()
    watcher.goto(f"{stack.url}/console/missions/{mission_id}")
    watcher.evaluate("window.__notReloaded = true")
    expect(watcher.locator("#mission-state")).to_have_text("active")

    # The operator revokes: a reason, then a confirmation.
    operator.check("#op-revoke")
    operator.fill("#op-reason", "credentials leaked")
    operator.click("button:has-text('Continue')")
    expect(operator.locator("h1")).to_contain_text("Revoke Mission")
    assert stack.mission(mission_id)["state"] == "active"  # not before confirming
    operator.click("button:has-text('Yes, revoke it')")
    confirmed_at = time.monotonic()
    expect(operator.locator("#mission-state")).to_have_text("revoked")

    expect(watcher.locator("#mission-state")).to_have_text("revoked", timeout=PATIENCE_MS)
    latency = time.monotonic() - confirmed_at
    print(f"second tab updated {latency * 1000:.0f} ms after the confirmation")
    assert watcher.evaluate("window.__notReloaded") is True
    expect(watcher.locator("#timeline-list")).to_contain_text("credentials leaked")
    revoked = stack.events(mission_id)[-1]
    assert revoked["type"] == "Revoked"
    assert revoked["data"]["reason"] == "credentials leaked"
    assert revoked["data"]["actor"]["name"] == "oscar"
    assert revoked["data"]["actor"]["iss"] == stack.provider.issuer

    # Sign-out ends the session: the back button shows nothing private, and the other tab
    # leaves the Mission for the sign-in page by itself.
    operator.click("button:has-text('Sign out')")
    expect(operator.locator("body")).to_contain_text("You are signed out")
    operator.go_back()
    operator.wait_for_load_state()
    assert operator.url.startswith(f"{stack.url}/console/signin")
    expect(operator.locator("h1")).to_have_text("Sign in to the console")
    assert "Effective authority" not in operator.content()
    watcher.wait_for_url(f"{stack.url}/console/signin**", timeout=PATIENCE_MS)
    assert "Effective authority" not in watcher.content()
    operator.goto(f"{stack.url}/console/missions/{mission_id}")
    assert operator.url.startswith(f"{stack.url}/console/signin")


def test_a_person_whose_roles_are_an_agents_is_refused(stack: Stack, new_context: Any) -> None:
    page = new_context().new_page()
    page.goto(f"{stack.url}/console/signin")
    page.click("text=Sign in with your organisation's account")
    page.fill("#login", "bot")
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{stack.url}/console/**")
    expect(page.locator("body")).to_contain_text("only people sign in")
    page.goto(f"{stack.url}/console/inbox")
    assert page.url.startswith(f"{stack.url}/console/signin")


def test_a_sign_in_the_provider_refuses_comes_back_as_a_message(
    stack: Stack, new_context: Any
) -> None:
    page = new_context().new_page()
    page.goto(f"{stack.url}/console/signin")
    page.click("text=Sign in with your organisation's account")
    page.fill("#login", "nobody")
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{stack.url}/console/**")
    expect(page.locator("[role=alert]")).to_contain_text("access_denied")
