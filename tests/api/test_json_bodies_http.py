"""Every route that takes a request body refuses the JSON no route can use (issue 10, C.7):
nesting deeper than the limit (a thousand levels used to crash the parser or the code
walking the value: 500), strings that are not Unicode scalar sequences (a lone surrogate
escape used to reach storage: 500), and ``NaN``/``Infinity``.

The routes are not listed by hand: they are read from the app's router, so a route added
later is covered without touching this file. Each answers 400 in its own shape (problem
details; AuthZEN's plain text; RFC 8936's ``{"err", "description"}`` on poll), saying what
is wrong with the body, and nothing is written.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from httpx import Response

from api.app import create_app
from api.json_body import DEFAULT_MAX_DEPTH
from ledger.domain.actors import Actor
from ledger.domain.roles import Role
from ledger.settings import Settings

WRITE_METHODS = ("POST", "PUT", "PATCH")


def body_routes() -> list[tuple[str, str]]:
    """(method, path) of every route of the app that can take a JSON body (the console's
    forms are HTML forms: tests/api/test_console_http.py)."""
    app = create_app(Settings(data_dir=Path("unused")))  # nothing opens before the lifespan
    found = set()
    for route in iter_route_contexts(app.router.routes):
        for method in route.methods or ():
            if (
                method in WRITE_METHODS
                and route.path is not None
                and not route.path.startswith("/console/")
            ):
                found.add((method, route.path))
    return sorted(found, key=lambda r: (r[1], r[0]))


ROUTES = body_routes()


@dataclass(frozen=True)
class Bad:
    body: bytes
    says: str  # a phrase of the 400's message


def nested(depth: int) -> bytes:
    """An object whose member ``x`` nests arrays so that the document is ``depth`` deep."""
    return b'{"x": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


CASES = {
    "nested one level too deep": Bad(nested(DEFAULT_MAX_DEPTH + 1), "deeper than"),
    "nested 1,000 deep": Bad(nested(1_000), "deeper than"),
    "nested 20,000 deep": Bad(nested(20_000), "deeper than"),
    "a lone surrogate escape": Bad(b'{"x": "\\udfff"}', "not valid Unicode"),
    "a lone surrogate escape as a member name": Bad(b'{"\\ud800": 1}', "not valid Unicode"),
    "a lone surrogate in UTF-8 bytes": Bad(b'{"x": "\xed\xbf\xbf"}', "not valid Unicode"),
    "NaN": Bad(b'{"x": NaN}', "NaN"),
    "Infinity": Bad(b'{"x": [Infinity]}', "Infinity"),
    "-Infinity": Bad(b'{"x": {"y": -Infinity}}', "-Infinity"),
    "a number beyond a double": Bad(b'{"x": 1e400}', "beyond the range"),
}


@dataclass
class Server:
    client: TestClient
    admin: str

    def head(self) -> int:
        return int(self.client.app.state.services.ledger.head_position())  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One embedded app for the module: every request here is refused, so none can affect
    another."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("json") / "data")
    app = create_app(settings)
    with TestClient(app) as client:
        admin = app.state.services.ledger.issue_api_key(
            name="admin-1", role=Role.ADMIN, actor=Actor(type="cli", name="test")
        ).secret
        yield Server(client=client, admin=admin)


def message_of(response: Response) -> str:
    """The 400's message, whichever shape the route answers in."""
    media = response.headers.get("content-type", "")
    if media.startswith("application/problem+json"):
        return str(response.json()["detail"])
    if media.startswith("application/json"):
        return str(response.json()["description"])
    return response.text


def test_every_route_taking_a_body_is_covered() -> None:
    paths = {path for _, path in ROUTES}
    assert {"/v1/proposals", "/access/v1/evaluation", "/mission-status", "/ssf/streams"} <= paths
    assert ("PATCH", "/ssf/streams") in ROUTES
    assert ("POST", "/ssf/poll/{stream_id}") in ROUTES


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_a_body_no_route_can_use_is_400_saying_why(
    server: Server, method: str, path: str, case: str
) -> None:
    bad = CASES[case]
    head = server.head()
    response = server.client.request(
        method,
        re.sub(r"\{[^}]+\}", "x_1", path),
        content=bad.body,
        headers={"Authorization": f"Bearer {server.admin}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert bad.says in message_of(response), response.text
    assert server.head() == head
