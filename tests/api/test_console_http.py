"""The console over HTTP (SPEC 7.5): sessions, CSRF, headers, who may do what, and what the
pages record, with a person per ``TestClient`` (its own cookie jar) signed in with an API
key. The same flows in a real browser, with OpenID sign-in: tests/console."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from httpx import Response

from api.app import create_app
from api.console.web import gates_of
from ledger.domain.actors import Actor
from ledger.domain.roles import Role
from ledger.settings import Settings
from tests.api.conftest import ROLES, Api, entry
from tests.api.test_roles_http import _routes

PUBLIC = {
    "/console/",
    "/console/signin",
    "/console/signin/oidc",
    "/console/signin/key",
    "/console/auth/callback",
}
CSRF = re.compile(r'name="csrf" value="([^"]*)"')


class App(Protocol):
    """A running app and its keys per role (``Api``, or the decision tests' ``Harness``)."""

    client: TestClient
    keys: dict[str, str]


class Person:
    """One browser: a client with its own cookies, signed in as ``who`` (an API key)."""

    def __init__(self, api: App, who: str | None = None) -> None:
        self.api = api
        self.client = TestClient(api.client.app, follow_redirects=False)
        if who is not None:
            response = self.sign_in(api.keys[who])
            assert response.status_code == 303, response.text

    def sign_in(self, key: str) -> Response:
        page = self.client.get("/console/signin")
        token = CSRF.search(page.text)
        assert token is not None, page.text
        return self.client.post(
            "/console/signin/key", data={"csrf": token.group(1), "api_key": key}
        )

    def get(self, path: str, **params: Any) -> Response:
        return self.client.get(path, params=params)

    def csrf(self, path: str) -> str:
        page = self.get(path)
        assert page.status_code == 200, page.text
        found = CSRF.search(page.text)
        assert found is not None
        return found.group(1)

    def post(self, path: str, data: dict[str, Any], **headers: str) -> Response:
        return self.client.post(path, data=data, headers=headers)


def approve_form(person: Person, proposal_id: str, **fields: Any) -> dict[str, Any]:
    page = person.get(f"/console/proposals/{proposal_id}")
    assert page.status_code == 200, page.text
    found = re.search(r'name="approval_event_id" value="([^"]+)"', page.text)
    assert found is not None
    form = {
        "csrf": CSRF.search(page.text).group(1),  # type: ignore[union-attr]
        "approval_event_id": found.group(1),
        "e0.action": ["invoices.read", "journal-entries.write"],
    }
    form.update(fields)
    return form


def proposal_with_amount(api: Api, *, goal: str = "Reconcile Q3 invoices") -> str:
    body = api.proposal_body()
    body["intent"]["goal"] = goal
    body["authorization_details"] = [
        entry(constraints={"max_amount": {"amount": "500", "currency": "EUR"}})
    ]
    response = api.client.post("/v1/proposals", json=body, headers=api.auth("agent"))
    assert response.status_code == 202, response.text
    return str(response.json()["submission_id"])


def status_of(api: Api, proposal_id: str) -> str:
    response = api.client.get(f"/v1/proposals/{proposal_id}", headers=api.auth("approver"))
    return str(response.json()["status"])


@pytest.fixture
def approver(api: Api) -> Person:
    return Person(api, "approver")


@pytest.fixture
def operator(api: Api) -> Person:
    return Person(api, "operator")


# ---------------------------------------------------------------------- routes and headers


def console_routes() -> list[APIRoute]:
    app = create_app(Settings(data_dir=Path("unused")))
    return [
        r for r in _routes(app.routes) if isinstance(r, APIRoute) and r.path.startswith("/console/")
    ]


def test_every_console_page_but_sign_in_declares_who_may_open_it() -> None:
    routes = console_routes()
    assert len(routes) >= 15
    ungated = {r.path for r in routes if not gates_of(r)}
    assert ungated == PUBLIC


def test_without_a_session_every_page_sends_to_sign_in_and_nothing_is_written(
    shared_api: Api,
) -> None:
    person = Person(shared_api)
    head = shared_api.head()
    for route in console_routes():
        if route.path in PUBLIC:
            continue
        path = re.sub(r"\{[^}]+\}", "x_1", route.path)
        for method in route.methods or ():
            response = person.client.request(method, path, data={"csrf": "x"})
            if route.path.endswith(("/panel", "/live")):
                assert response.status_code == 401, (method, path)
            else:
                assert response.status_code == 303, (method, path, response.text)
                assert response.headers["location"].startswith("/console/signin")
    assert shared_api.head() == head


def assert_console_headers(response: Response, *, private: bool = True) -> None:
    csp = response.headers["content-security-policy"]
    assert "unsafe-inline" not in csp
    assert "unsafe-eval" not in csp
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["x-content-type-options"] == "nosniff"
    if private:
        assert response.headers["cache-control"] == "no-store"


def test_every_page_sends_the_csp_frame_and_cache_headers(api: Api) -> None:
    proposal = api.submit()["submission_id"]
    mission = api.mission()["id"]
    admin = Person(api, "admin")
    assert_console_headers(Person(api).get("/console/signin"))
    pages = [
        "/console/inbox",
        f"/console/proposals/{proposal}",
        "/console/missions",
        f"/console/missions/{mission}",
        f"/console/missions/{mission}/panel",
        "/console/audit/chain",
        "/console/proposals/prp_unknown",  # an error page
    ]
    for path in pages:
        response = admin.get(path)
        assert response.status_code in (200, 404), (path, response.text)
        assert response.headers["content-type"].startswith("text/html"), path
        assert_console_headers(response)
    redirect = Person(api).get("/console/inbox")
    assert redirect.status_code == 303
    assert_console_headers(redirect)


def test_static_assets_are_served_from_the_service_with_the_same_headers(
    shared_api: Api,
) -> None:
    page = Person(shared_api).get("/console/signin")
    assets = re.findall(r'(?:src|href)="(/console/static/[^"]+)"', page.text)
    assert any("htmx-2.0.11" in a for a in assets)
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page.text)  # nothing from elsewhere
    for asset in assets:
        response = shared_api.client.get(asset)
        assert response.status_code == 200, asset
        assert_console_headers(response, private=False)


def test_the_api_itself_does_not_get_console_headers(shared_api: Api) -> None:
    response = shared_api.client.get("/v1/missions", headers=shared_api.auth("operator"))
    assert "content-security-policy" not in response.headers


# ---------------------------------------------------------------------- signing in


@pytest.mark.parametrize("who", ["agent", "pep"])
def test_an_agent_or_pep_key_cannot_sign_in(api: Api, who: str) -> None:
    person = Person(api)
    response = person.sign_in(api.keys[who])
    assert response.status_code == 403
    assert "only people sign in" in html.unescape(response.text)
    assert "ml_console" not in response.headers.get("set-cookie", "")
    assert person.get("/console/inbox").status_code == 303


def test_an_unknown_key_cannot_sign_in(shared_api: Api) -> None:
    response = Person(shared_api).sign_in("mlk_nope.nothing")
    assert response.status_code == 401
    assert "unknown or revoked" in response.text


def test_the_key_is_exchanged_for_a_session_cookie_that_does_not_hold_it(api: Api) -> None:
    person = Person(api)
    response = person.sign_in(api.keys["approver"])
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("ml_console=")
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()
    assert "Secure" not in cookie  # the issuer is loopback http
    assert api.keys["approver"] not in cookie
    assert api.keys["approver"].split(".")[1] not in str(person.client.cookies.jar)


def test_signing_in_again_ends_the_session_before(api: Api, approver: Person) -> None:
    old = approver.client.cookies["ml_console"]
    form = Person(api)  # a sign-in form opened in another tab of the same browser
    token = CSRF.search(form.get("/console/signin").text).group(1)  # type: ignore[union-attr]
    approver.client.cookies.set("ml_signin", form.client.cookies["ml_signin"])
    response = approver.post(
        "/console/signin/key", {"csrf": token, "api_key": api.keys["operator"]}
    )
    assert response.status_code == 303
    assert approver.get("/console/missions").status_code == 200  # now the operator
    replay = TestClient(api.client.app, follow_redirects=False, cookies={"ml_console": old})
    assert replay.get("/console/inbox").status_code == 303


def test_a_sign_in_form_without_its_token_is_refused(shared_api: Api) -> None:
    person = Person(shared_api)
    person.get("/console/signin")
    response = person.post(
        "/console/signin/key", {"csrf": "forged", "api_key": shared_api.keys["approver"]}
    )
    assert response.status_code == 403
    assert person.get("/console/inbox").status_code == 303


def test_over_https_the_session_cookie_is_secure_and_host_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", issuer="https://ledger.example.com")
    app = create_app(settings)
    with TestClient(app, base_url="https://ledger.example.com", follow_redirects=False) as c:
        key = app.state.services.ledger.issue_api_key(
            name="approver-1", role=Role.APPROVER, actor=Actor(type="cli", name="t")
        ).secret
        token = CSRF.search(c.get("/console/signin").text).group(1)  # type: ignore[union-attr]
        response = c.post(
            "/console/signin/key",
            data={"csrf": token, "api_key": key},
            headers={"Origin": "https://ledger.example.com"},
        )
        cookie = response.headers["set-cookie"]
        assert cookie.startswith("__Host-ml_console=")
        assert "Secure" in cookie
        assert "Path=/" in cookie


def test_sign_out_ends_the_session_on_the_server(api: Api, approver: Person) -> None:
    stolen = dict(approver.client.cookies)
    response = approver.post("/console/signout", {"csrf": approver.csrf("/console/inbox")})
    assert response.status_code == 303
    assert response.headers["location"] == "/console/signin?signed_out=1"
    replay = TestClient(api.client.app, follow_redirects=False, cookies=stolen)
    assert replay.get("/console/inbox").status_code == 303


def test_an_idle_session_ends_after_the_idle_timeout(api: Api, approver: Person) -> None:
    idle = api.settings.console_idle_minutes
    api.clock.advance(minutes=idle - 1)
    assert approver.get("/console/inbox").status_code == 200  # activity
    api.clock.advance(minutes=idle - 1)
    assert approver.get("/console/inbox").status_code == 200
    api.clock.advance(minutes=idle)
    assert approver.get("/console/inbox").status_code == 303


def test_a_session_ends_when_its_api_key_is_revoked(api: Api, approver: Person) -> None:
    assert approver.get("/console/inbox").status_code == 200
    api.services.ledger.revoke_api_key(name=ROLES["approver"], actor=Actor("cli", "t"), reason="x")
    api.services.follower.wait(api.head(), 5)
    assert approver.get("/console/inbox").status_code == 303


# ---------------------------------------------------------------------- CSRF


def test_a_post_without_a_csrf_token_is_403_and_writes_nothing(api: Api, approver: Person) -> None:
    proposal = api.submit()["submission_id"]
    form = approve_form(approver, proposal)
    del form["csrf"]
    head = api.head()
    response = approver.post(f"/console/proposals/{proposal}/approve", form)
    assert response.status_code == 403
    assert "security token" in response.text
    assert api.head() == head
    assert status_of(api, proposal) == "pending"


def test_a_post_with_a_wrong_csrf_token_is_403_and_writes_nothing(
    api: Api, operator: Person
) -> None:
    mission = api.mission()["id"]
    head = api.head()
    response = operator.post(
        f"/console/missions/{mission}/lifecycle",
        {"csrf": "wrong", "operation": "revoke", "reason": "x", "confirmed": "yes"},
    )
    assert response.status_code == 403
    assert api.head() == head
    assert api.get_mission(mission)["state"] == "active"


def test_the_csrf_token_of_another_session_is_refused(api: Api, operator: Person) -> None:
    mission = api.mission()["id"]
    other = Person(api, "operator")
    head = api.head()
    response = operator.post(
        f"/console/missions/{mission}/lifecycle",
        {
            "csrf": other.csrf("/console/missions"),
            "operation": "revoke",
            "reason": "x",
            "confirmed": "yes",
        },
    )
    assert response.status_code == 403
    assert api.head() == head


def test_a_form_sent_from_another_origin_is_refused(api: Api, operator: Person) -> None:
    mission = api.mission()["id"]
    head = api.head()
    response = operator.post(
        f"/console/missions/{mission}/lifecycle",
        {
            "csrf": operator.csrf("/console/missions"),
            "operation": "revoke",
            "reason": "x",
            "confirmed": "yes",
        },
        Origin="https://evil.example",
    )
    assert response.status_code == 403
    assert api.head() == head


# ---------------------------------------------------------------------- who may do what


def test_a_session_acts_only_as_its_own_person(api: Api, approver: Person) -> None:
    """Whatever the form says, the write is the session's person's (and an operator's
    session cannot approve, even with an approver's form)."""
    proposal = api.submit()["submission_id"]
    form = approve_form(approver, proposal)
    operator = Person(api, "operator")
    forged = {**form, "csrf": operator.csrf("/console/missions"), "actor": "admin-1"}
    assert operator.post(f"/console/proposals/{proposal}/approve", forged).status_code == 403
    assert status_of(api, proposal) == "pending"
    response = approver.post(f"/console/proposals/{proposal}/approve", {**form, "actor": "x"})
    assert response.status_code == 303
    mission_id = response.headers["location"].split("/")[-1].split("?")[0]
    mission = api.get_mission(mission_id)
    assert mission["approver"] == {"type": "api_key", "name": "approver-1", "role": "approver"}


def test_console_writes_are_recorded_exactly_as_api_writes(api: Api, operator: Person) -> None:
    by_api = api.mission()["id"]
    assert api.lifecycle(by_api, "suspend").status_code == 200
    by_console = api.mission()["id"]
    form = {
        "csrf": operator.csrf(f"/console/missions/{by_console}"),
        "operation": "suspend",
        "reason": "test suspend",
        "confirmed": "yes",
    }
    assert operator.post(f"/console/missions/{by_console}/lifecycle", form).status_code == 303
    api_event, console_event = api.events(by_api)[-1], api.events(by_console)[-1]
    assert console_event["type"] == api_event["type"] == "Suspended"
    assert console_event["data"]["actor"] == api_event["data"]["actor"]
    assert console_event["data"]["reason"] == api_event["data"]["reason"] == "test suspend"


def test_an_operator_is_not_offered_resume_and_cannot_resume(api: Api, operator: Person) -> None:
    mission = api.mission()["id"]
    assert api.lifecycle(mission, "suspend").status_code == 200
    page = operator.get(f"/console/missions/{mission}")
    assert 'value="resume"' not in page.text
    assert 'value="revoke"' in page.text
    head = api.head()
    for confirmed in ("", "yes"):
        response = operator.post(
            f"/console/missions/{mission}/lifecycle",
            {
                "csrf": operator.csrf("/console/missions"),
                "operation": "resume",
                "reason": "back to work",
                "confirmed": confirmed,
            },
        )
        assert response.status_code == 403
    assert api.head() == head
    assert api.get_mission(mission)["state"] == "suspended"


def test_an_admin_resumes_after_confirming(api: Api) -> None:
    mission = api.mission()["id"]
    assert api.lifecycle(mission, "suspend").status_code == 200
    admin = Person(api, "admin")
    assert 'value="resume"' in admin.get(f"/console/missions/{mission}").text
    form = {
        "csrf": admin.csrf("/console/missions"),
        "operation": "resume",
        "reason": "back to work",
    }
    head = api.head()
    confirm = admin.post(f"/console/missions/{mission}/lifecycle", form)
    assert confirm.status_code == 200
    assert "Resume Mission" in confirm.text
    assert api.head() == head
    done = admin.post(f"/console/missions/{mission}/lifecycle", {**form, "confirmed": "yes"})
    assert done.status_code == 303
    assert api.get_mission(mission)["state"] == "active"


def test_revoking_takes_a_reason_and_a_confirmation(api: Api, operator: Person) -> None:
    mission = api.mission()["id"]
    csrf = operator.csrf(f"/console/missions/{mission}")
    head = api.head()
    no_reason = operator.post(
        f"/console/missions/{mission}/lifecycle",
        {"csrf": csrf, "operation": "revoke", "reason": "", "confirmed": "yes"},
    )
    assert no_reason.status_code == 400
    confirm = operator.post(
        f"/console/missions/{mission}/lifecycle",
        {"csrf": csrf, "operation": "revoke", "reason": "leaked key"},
    )
    assert confirm.status_code == 200
    assert "cannot be undone" in confirm.text
    assert api.head() == head
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', confirm.text))
    assert fields["confirmed"] == "yes"
    done = operator.post(f"/console/missions/{mission}/lifecycle", fields)
    assert done.status_code == 303
    last = api.events(mission)[-1]
    assert last["type"] == "Revoked"
    assert last["data"]["reason"] == "leaked key"
    assert last["data"]["actor"]["name"] == "operator-1"


def test_a_stale_confirmation_is_refused_when_the_mission_changed(
    api: Api, operator: Person
) -> None:
    mission = api.mission()["id"]
    confirm = operator.post(
        f"/console/missions/{mission}/lifecycle",
        {"csrf": operator.csrf("/console/missions"), "operation": "suspend", "reason": "r"},
    )
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', confirm.text))
    assert api.lifecycle(mission, "revoke").status_code == 200  # meanwhile, elsewhere
    response = operator.post(f"/console/missions/{mission}/lifecycle", fields)
    assert response.status_code == 409
    assert api.get_mission(mission)["state"] == "revoked"


def test_containment_removes_the_ticked_actions_after_confirming(
    api: Api, operator: Person
) -> None:
    mission = api.mission()["id"]
    fields = {
        "csrf": operator.csrf(f"/console/missions/{mission}"),
        "resource": "https://erp.example.com",
        "action": ["journal-entries.write"],
        "reason": "suspicious writes",
    }
    confirm = operator.post(f"/console/missions/{mission}/containment", fields)
    assert confirm.status_code == 200
    done = operator.post(f"/console/missions/{mission}/containment", {**fields, "confirmed": "yes"})
    assert done.status_code == 303
    effective = api.get_mission(mission)["effective_authorization_details"]
    assert effective[0]["actions"] == ["invoices.read"]


def test_an_approver_sees_the_missions_they_approved_and_no_other(
    api: Api, approver: Person
) -> None:
    proposal = api.submit()["submission_id"]
    done = approver.post(f"/console/proposals/{proposal}/approve", approve_form(approver, proposal))
    mine = done.headers["location"].split("?")[0]
    page = approver.get(mine)
    assert page.status_code == 200
    assert "Timeline" not in page.text  # the event log is for operators and auditors
    others = api.mission()["id"]  # approved over the API by the same key: also theirs
    assert approver.get(f"/console/missions/{others}").status_code == 200
    admin_approved = api.submit()["submission_id"]
    response = api.client.post(
        f"/v1/proposals/{admin_approved}/approve", json={}, headers=api.auth("admin")
    )
    not_mine = response.json()["id"]
    assert approver.get(f"/console/missions/{not_mine}").status_code == 404
    assert approver.get("/console/missions").status_code == 403


def test_an_approver_lists_the_missions_they_approved_and_no_other(api: Api) -> None:
    mine = api.mission()["id"]  # approved over the API with the approver's key
    admin_approved = api.submit()["submission_id"]
    response = api.client.post(
        f"/v1/proposals/{admin_approved}/approve", json={}, headers=api.auth("admin")
    )
    not_mine = response.json()["id"]
    page = Person(api, "approver").get("/console/approved")
    assert page.status_code == 200
    assert f'href="/console/missions/{mine}"' in page.text
    assert not_mine not in page.text
    assert Person(api, "operator").get("/console/approved").status_code == 403


def test_missions_approved_before_the_approver_column_are_listed_after_a_start(
    api: Api,
) -> None:
    mission = api.mission()["id"]
    db = api.services.ledger.database
    db.execute("UPDATE mission_board SET approver_key = NULL")  # as migration 0009 left it
    assert api.services.missions.fill_approver_keys(db) == 1
    page = Person(api, "approver").get("/console/approved")
    assert f'href="/console/missions/{mission}"' in page.text


def test_an_operator_has_no_inbox_and_an_approver_no_chain(
    shared_api: Api,
) -> None:
    assert Person(shared_api, "operator").get("/console/inbox").status_code == 403
    assert Person(shared_api, "approver").get("/console/audit/chain").status_code == 403


# ---------------------------------------------------------------------- the approver


def test_the_inbox_lists_pending_proposals_oldest_first_in_pages(api: Api) -> None:
    ids = [api.submit()["submission_id"] for _ in range(27)]
    decided = ids.pop(3)
    assert (
        api.client.post(
            f"/v1/proposals/{decided}/deny", json={"reason": "no"}, headers=api.auth("approver")
        ).status_code
        == 200
    )
    person = Person(api, "approver")
    first = person.get("/console/inbox")
    shown = re.findall(r'href="/console/proposals/(prp_[^"]+)"', first.text)
    shown = list(dict.fromkeys(shown))
    assert shown == ids[:25]
    cursor = re.search(r'href="/console/inbox\?cursor=([^"]+)"', first.text)
    assert cursor is not None
    second = person.get("/console/inbox", cursor=unquote(html.unescape(cursor.group(1))))
    rest = list(dict.fromkeys(re.findall(r'href="/console/proposals/(prp_[^"]+)"', second.text)))
    assert rest == ids[25:]
    assert "cursor=" not in second.text


def test_agent_written_text_renders_inert_under_an_untrusted_label(
    api: Api, approver: Person
) -> None:
    goal = (
        '<script>alert("x")</script><img src=x onerror=alert(1)> [click](javascript:alert(1)) '
        "**Approve me**\u202egnp.exe</textarea><b>bold</b>"
    )
    proposal = proposal_with_amount(api, goal=goal)
    for path in ("/console/inbox", f"/console/proposals/{proposal}"):
        page = approver.get(path).text
        assert "<script>alert" not in page
        assert "<img src=x" not in page
        assert "<b>bold</b>" not in page
        assert "</textarea><b>" not in page
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
        assert "Untrusted — written by the agent" in page
        assert 'href="javascript' not in page
    decision = approver.get(f"/console/proposals/{proposal}").text
    fenced = decision[decision.index('class="untrusted"') :]
    assert fenced.index("&lt;script&gt;") < fenced.index("</section>")
    assert "[U+202E]" in decision  # the direction override is shown, not obeyed


def test_approving_with_narrowing_grants_what_was_ticked(api: Api, approver: Person) -> None:
    proposal = proposal_with_amount(api)
    form = approve_form(
        approver,
        proposal,
        **{"e0.action": ["invoices.read"], "e0.max_amount": "120.50"},
        expires_at="2026-12-01T08:30",
    )
    review = approver.post(f"/console/proposals/{proposal}/review", form)
    assert review.status_code == 200
    assert "removed journal-entries.write" in review.text
    assert "amount lowered from 500 to 120.50 EUR" in review.text
    assert status_of(api, proposal) == "pending"
    done = approver.post(f"/console/proposals/{proposal}/approve", form)
    assert done.status_code == 303
    mission = api.get_mission(done.headers["location"].split("/")[-1].split("?")[0])
    assert mission["authorization_details"] == [
        entry(
            actions=["invoices.read"],
            constraints={"max_amount": {"amount": "120.50", "currency": "EUR"}},
        )
    ]
    assert mission["expires_at"] == "2026-12-01T08:30:00Z"


def test_approving_twice_from_one_form_makes_one_mission(api: Api, approver: Person) -> None:
    proposal = api.submit()["submission_id"]
    form = approve_form(approver, proposal)
    first = approver.post(f"/console/proposals/{proposal}/approve", form)
    again = approver.post(f"/console/proposals/{proposal}/approve", form)
    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"]


@pytest.mark.parametrize(
    "fields",
    [
        {"e0.action": ["invoices.read", "invoices.delete"]},
        {"e0.max_amount": "500.01"},
        {"expires_at": "2099-06-01T00:00"},
        {"e0.action": []},
    ],
    ids=["an action not asked for", "a higher amount", "a later expiry", "nothing left"],
)
def test_an_approval_never_widens_and_writes_nothing(
    api: Api, approver: Person, fields: dict[str, Any]
) -> None:
    proposal = proposal_with_amount(api)
    head = api.head()
    form = approve_form(approver, proposal, **fields)
    response = approver.post(f"/console/proposals/{proposal}/approve", form)
    assert response.status_code == 400, response.text
    assert "Nothing was changed" in response.text
    assert api.head() == head
    assert status_of(api, proposal) == "pending"


def test_denying_takes_a_reason_and_records_it(api: Api, approver: Person) -> None:
    proposal = api.submit()["submission_id"]
    csrf = approver.csrf(f"/console/proposals/{proposal}")
    head = api.head()
    empty = approver.post(f"/console/proposals/{proposal}/deny", {"csrf": csrf, "reason": " "})
    assert empty.status_code == 400
    assert api.head() == head
    done = approver.post(
        f"/console/proposals/{proposal}/deny", {"csrf": csrf, "reason": "too broad"}
    )
    assert done.status_code == 303
    seen = api.client.get(f"/v1/proposals/{proposal}", headers=api.auth("approver")).json()
    assert (seen["status"], seen["reason"]) == ("denied", "too broad")


def test_the_decision_page_shows_family_breadth_constraints_terms_and_the_requester(
    api: Api, approver: Person
) -> None:
    body = api.proposal_body()
    body["intent"]["controls"] = {"max_derivations": 3}
    body["authorization_details"] = [
        entry(
            actions=["reports.*"],
            resource_match="prefix",
            constraints={"tenant": "acme", "requires_action_approval": True},
        )
    ]
    response = api.client.post("/v1/proposals", json=body, headers=api.auth("agent"))
    proposal = response.json()["submission_id"]
    page = html.unescape(approver.get(f"/console/proposals/{proposal}").text)
    assert "ANY action in the reports.* family (broad" in page
    assert "and everything below it" in page
    assert "only in tenant acme" in page
    assert "each action needs its own approval" in page
    assert "At most 3 Mandates may be derived from the Mission" in page
    assert "The Mission ends at" in page
    assert "agent-1 (agent), API key" in page
    assert "attested: not verified" in page
    assert "decide within" in page


# ---------------------------------------------------------------------- operators, auditors


def test_the_missions_list_filters_by_state_agent_and_subject(api: Api) -> None:
    active = api.mission()["id"]
    revoked = api.mission()["id"]
    assert api.lifecycle(revoked, "revoke").status_code == 200
    other_agent = api.mission(who="agent2")["id"]
    person = Person(api, "operator")

    def listed(**params: str) -> set[str]:
        page = person.get("/console/missions", **params)
        assert page.status_code == 200, page.text
        return set(re.findall(r'href="/console/missions/(msn_[^"]+)"', page.text))

    assert listed() == {active, revoked, other_agent}
    assert listed(state="revoked") == {revoked}
    assert listed(agent="agent-2") == {other_agent}
    assert listed(subject="nobody") == set()
    assert person.get("/console/missions", state="bogus").status_code == 400


def test_the_mission_page_shows_state_authority_and_the_timeline(
    api: Api, operator: Person
) -> None:
    mission = api.mission()["id"]
    assert api.lifecycle(mission, "suspend", reason="audit in progress").status_code == 200
    page = html.unescape(operator.get(f"/console/missions/{mission}").text)
    assert 'id="mission-state">suspended' in page
    assert 'id="mission-version">2' in page
    assert "Effective authority now" in page
    assert "Approved: the Mission began" in page
    assert "Suspended" in page
    assert "Reason: <q>audit in progress</q>" in page
    assert "By operator-1 (operator), API key" in page
    assert f'sse-connect="/console/missions/{mission}/live?version=2"' in page


def test_the_auditor_verifies_the_chain(api: Api) -> None:
    api.mission()
    page = Person(api, "auditor").get("/console/audit/chain", verify="1")
    assert page.status_code == 200
    assert "Intact:" in page.text
    assert f"head position {api.head()}" in page.text
