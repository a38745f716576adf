"""Every console page in Chromium: axe-core finds no serious or critical violation, the page
fits 320 px without sideways scrolling (a screenshot at that width is taken: into
docs/screenshots/ with ``MISSION_LEDGER_SCREENSHOTS=1``), the approve form works by keyboard
alone, the CSP holds (htmx runs without a violation) and agent-written text stays inert."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.console.harness import DOCS_SCREENSHOTS, Stack, axe_violations, sign_in_with_key

pytestmark = pytest.mark.xdist_group("console-pages")

NARROW = {"width": 320, "height": 800}
TRICKS = (
    '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'
    "[approve me](javascript:window.__pwned=3) **urgent** <b>trust me</b>"
)


def open_pages(stack: Stack) -> dict[str, tuple[str, str]]:
    """Each page once: name -> (role that sees it, path)."""
    proposal = stack.submit(TRICKS)
    decided = stack.submit("Pay the supplier invoices")
    mission = stack.approve_over_api(decided)
    task = stack.access_request(TRICKS)
    return {
        "access-request": ("approver", f"/console/access-requests/{task}"),
        "approved": ("approver", "/console/approved"),
        "decisions": ("auditor", f"/console/audit/decisions?mission={mission}"),
        "export": ("auditor", "/console/audit/export"),
        "inbox": ("approver", "/console/inbox"),
        "decision": ("approver", f"/console/proposals/{proposal}"),
        "missions": ("operator", "/console/missions"),
        "mission": ("operator", f"/console/missions/{mission}"),
        "mission-as-approver": ("approver", f"/console/missions/{mission}"),
        "chain": ("auditor", "/console/audit/chain?verify=1"),
        "not-found": ("operator", "/console/missions/msn_nothing"),
    }


@pytest.fixture(scope="module")
def pages(stack: Stack) -> dict[str, tuple[str, str]]:
    return open_pages(stack)


def screenshot_path(name: str, tmp_path: Path) -> Path:
    if os.environ.get("MISSION_LEDGER_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return DOCS_SCREENSHOTS / f"{name}-320.png"
    return tmp_path / f"{name}-320.png"


def png_width(path: Path) -> int:
    return int(struct.unpack(">I", path.read_bytes()[16:20])[0])


def assert_accessible(page: Page, what: str) -> None:
    violations = axe_violations(page)
    assert violations == [], f"{what}: {violations}"


def assert_fits(page: Page, what: str) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= NARROW["width"], f"{what} is {width} px wide at 320 px"


def signed_in(new_context: Callable[..., Any], stack: Stack, role: str, **options: Any) -> Page:
    return sign_in_with_key(new_context(**options), stack, role)  # type: ignore[no-any-return]


def test_the_sign_in_page_is_accessible_and_fits_320px(
    stack: Stack, new_context: Any, tmp_path: Path
) -> None:
    page = new_context(viewport=NARROW).new_page()
    page.goto(f"{stack.url}/console/signin")
    assert_accessible(page, "sign-in")
    assert_fits(page, "sign-in")
    path = screenshot_path("signin", tmp_path)
    page.screenshot(path=str(path), full_page=True)
    assert png_width(path) == 320


@pytest.mark.parametrize(
    "name",
    [
        "inbox",
        "decision",
        "access-request",
        "approved",
        "missions",
        "mission",
        "mission-as-approver",
        "chain",
        "decisions",
        "export",
        "not-found",
    ],
)
def test_every_page_is_accessible_and_fits_320px(
    stack: Stack,
    pages: dict[str, tuple[str, str]],
    new_context: Any,
    tmp_path: Path,
    name: str,
) -> None:
    role, path = pages[name]
    wide = signed_in(new_context, stack, role)
    wide.goto(stack.url + path)
    assert_accessible(wide, f"{name} at 1280 px")
    narrow = signed_in(new_context, stack, role, viewport=NARROW)
    narrow.goto(stack.url + path)
    assert_accessible(narrow, f"{name} at 320 px")
    assert_fits(narrow, name)
    shot = screenshot_path(name, tmp_path)
    narrow.screenshot(path=str(shot), full_page=True)
    assert png_width(shot) == 320


def test_the_review_and_confirmation_pages_are_accessible_and_fit_320px(
    stack: Stack, new_context: Any, tmp_path: Path
) -> None:
    proposal = stack.submit("Close the books")
    approver = signed_in(new_context, stack, "approver", viewport=NARROW)
    approver.goto(f"{stack.url}/console/proposals/{proposal}")
    approver.uncheck("input[name='e0.action'][value='invoices.pay']")
    approver.click("button:has-text('Review approval')")
    expect(approver.locator("h1")).to_have_text("Approve this authority?")
    assert_accessible(approver, "review")
    assert_fits(approver, "review")
    approver.screenshot(path=str(screenshot_path("review", tmp_path)), full_page=True)
    mission = stack.approve_over_api(stack.submit("Close the books again"))
    operator = signed_in(new_context, stack, "operator", viewport=NARROW)
    operator.goto(f"{stack.url}/console/missions/{mission}")
    operator.check("#op-suspend")
    operator.fill("#op-reason", "checking something")
    operator.click("form[action$='/lifecycle'] button:has-text('Continue')")
    expect(operator.locator("h1")).to_contain_text("Suspend Mission")
    assert_accessible(operator, "confirmation")
    assert_fits(operator, "confirmation")
    operator.screenshot(path=str(screenshot_path("confirm", tmp_path)), full_page=True)


def test_the_approve_form_works_by_keyboard_alone(stack: Stack, new_context: Any) -> None:
    proposal = stack.submit("Keyboard only")
    page = signed_in(new_context, stack, "approver")
    page.goto(f"{stack.url}/console/proposals/{proposal}")

    def tab_to(selector: str, limit: int = 80) -> None:
        for _ in range(limit):
            page.keyboard.press("Tab")
            if page.evaluate(
                "(s) => document.activeElement && document.activeElement.matches(s)", selector
            ):
                return
        pytest.fail(f"Tab never reached {selector}")

    tab_to("input[name='e0.action'][value='invoices.pay']")
    page.keyboard.press("Space")
    tab_to("input[name='e0.max_amount']")
    page.keyboard.press("Control+A")
    page.keyboard.type("75")
    tab_to("#approve-form button[type=submit]")
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Approve this authority?")
    tab_to("form[action$='/approve'] button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{stack.url}/console/missions/msn_*")
    mission = stack.mission(page.url.split("/")[-1].split("?")[0])
    entry = mission["authorization_details"][0]
    assert entry["actions"] == ["invoices.read", "reports.*"]
    assert entry["constraints"]["max_amount"]["amount"] == "75"


def test_an_access_request_is_approved_from_the_inbox_by_keyboard(
    stack: Stack, new_context: Any
) -> None:
    task = stack.access_request("need it for the close")
    page = signed_in(new_context, stack, "approver")
    page.goto(f"{stack.url}/console/inbox")
    link = page.locator(f"a.button[href='/console/access-requests/{task}']")
    link.focus()
    page.keyboard.press("Enter")
    page.wait_for_url(f"{stack.url}/console/access-requests/{task}")
    expect(page.locator("#denied-sentence")).to_contain_text("tried to invoices.pay")
    expect(page.locator("section[aria-labelledby='current']")).to_contain_text("invoices.pay")
    page.focus("#max_uses")
    page.keyboard.press("Control+A")
    page.keyboard.type("2")
    page.keyboard.press("Tab")
    page.keyboard.type("approved for the close")
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{stack.url}/console/access-requests/{task}?done=approved")
    expect(page.locator("[role=status]")).to_contain_text("Approved")
    view = stack.task(task)
    assert view["status"] == "approved"
    assert view["approval"]["max_uses"] == 2
    assert view["decision"]["reason"] == "approved for the close"


WATCH = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) => window.__csp.push(e.violatedDirective));
document.addEventListener("htmx:sseOpen", () => { window.__live = true; });
"""


def test_agent_text_stays_inert_and_the_csp_holds(
    stack: Stack, pages: dict[str, tuple[str, str]], new_context: Any
) -> None:
    context = new_context()
    context.add_init_script(WATCH)
    page = sign_in_with_key(context, stack, "approver")
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: errors.append(f"dialog: {d.message}"))
    page.goto(stack.url + pages["decision"][1])
    assert page.evaluate("window.__pwned") is None
    assert page.evaluate("typeof htmx") == "object"  # the enhancement loaded under the CSP
    fenced = page.locator("section.untrusted")
    expect(fenced).to_contain_text("Untrusted — written by the agent")
    assert fenced.locator("pre.agent-text").first.text_content() == TRICKS
    assert fenced.locator("script, img, b, a").count() == 0
    page.goto(stack.url + pages["access-request"][1])
    assert page.evaluate("window.__pwned") is None
    fenced = page.locator("section.untrusted")
    expect(fenced).to_contain_text("Untrusted — written by the agent")
    assert fenced.locator("pre.agent-text").first.text_content() == TRICKS
    assert fenced.locator("script, img, b, a").count() == 0
    page.goto(stack.url + pages["mission-as-approver"][1])
    # htmx opened the live stream. A function, not an expression: Playwright evaluates the
    # string once, inside its own (CSP-exempt) call, and polls the function it got. An
    # expression is evaluated again on every later poll, which this page's CSP refuses
    # ('unsafe-eval'), so the wait failed whenever the stream opened after the first poll.
    page.wait_for_function("() => window.__live === true")
    assert page.evaluate("window.__csp") == []
    assert errors == []
