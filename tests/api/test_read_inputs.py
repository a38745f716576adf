"""No query parameter of a read makes the service fail: any text in any filter, cursor,
limit, instant or ``as_of`` of the listing, audit, decision-log and export endpoints is
answered or refused with a clear 4xx, never a server error, on both stores (PostgreSQL
cannot compare a text holding NUL; instants out of years 1-9999 once overflowed)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import given, settings

from tests.api.as_of_story import issue
from tests.api.conftest import Api
from tests.api.test_console_http import Person
from tests.awkward_values import FUZZ, assert_answered, awkward_text

AWKWARD = awkward_text(
    "\u0000",
    "-1",
    "0",
    "1e3",
    "²",
    "9" * 30,
    "2026-12-05T10:00:00Z\n",
    "2026-12-05T10:00:00Z",
    "2026-13-45T99:00:00Z",
    "mis_",
    "\ud7ff",
    "a b",
    max_size=60,
)

#: (path, who may read it, query parameters): every parameter of every read it has.
READS: list[tuple[str, str, tuple[str, ...]]] = [
    ("/v1/missions", "operator", ("state", "subject", "client_id", "cursor", "limit")),
    ("/v1/missions/{mission}", "operator", ("as_of",)),
    ("/v1/mandates/{mandate}", "operator", ("as_of",)),
    ("/v1/proposals", "approver", ("status", "cursor", "limit")),
    ("/v1/access-requests", "approver", ("status", "mission", "cursor", "limit")),
    ("/v1/audit/log", "auditor", ("after", "limit")),
    (
        "/v1/audit/decisions",
        "auditor",
        ("mission", "mandate", "agent", "decision", "from", "to", "cursor", "limit"),
    ),
    ("/v1/audit/export", "auditor", ("mission", "from", "to")),
]
#: The console's pages with query parameters (signed in as ``who``).
CONSOLE_READS: list[tuple[str, str, tuple[str, ...]]] = [
    ("/console/inbox", "approver", ("cursor",)),
    ("/console/approved", "approver", ("cursor",)),
    ("/console/missions", "operator", ("state", "agent", "subject", "cursor")),
    ("/console/audit/chain", "auditor", ("verify",)),
    (
        "/console/audit/decisions",
        "auditor",
        ("mission", "mandate", "agent", "decision", "from", "to", "cursor"),
    ),
    ("/console/audit/export", "auditor", ("mission",)),
    ("/console/audit/export/bundle", "auditor", ("mission", "from", "to")),
]
CASES = [(path, who, name) for path, who, names in READS + CONSOLE_READS for name in names]


Reading = tuple[Api, dict[str, str], dict[str, Person]]


@pytest.fixture(scope="module")
def reading(store_api: Api) -> Reading:
    """The module's app on one store, with a Mission and a Mandate to read (the examples
    only read), and a signed-in console person per role."""
    mission = store_api.mission()["id"]
    mandate = issue(store_api, mission)
    people = {who: Person(store_api, who) for who in ("approver", "operator", "auditor")}
    return store_api, {"mission": mission, "mandate": mandate["mandate_id"]}, people


@pytest.mark.parametrize(("path", "who", "name"), CASES, ids=str)
@settings(FUZZ, max_examples=25)
@given(value=AWKWARD)
def test_no_query_parameter_of_a_read_gives_a_server_error(
    reading: Reading, path: str, who: str, name: str, value: Any
) -> None:
    api, ids, people = reading
    if path.startswith("/console/"):
        response = people[who].get(path, **{name: value})
        assert_answered(response, path, name, value, problem=False)
        return
    response = api.client.get(path.format(**ids), params={name: value}, headers=api.auth(who))
    assert_answered(response, path, name, value)


#: Reads of one thing by its id (``{id}``), and who may read it.
BY_ID: list[tuple[str, str]] = [
    ("/v1/missions/{id}", "operator"),
    ("/v1/missions/{id}/events", "auditor"),
    ("/v1/missions/{id}/usage/events", "auditor"),
    ("/v1/mandates/{id}", "operator"),
    ("/v1/proposals/{id}", "approver"),
    ("/v1/access-requests/{id}", "approver"),
    ("/console/missions/{id}", "operator"),
    ("/console/missions/{id}/panel", "operator"),
    ("/console/proposals/{id}", "approver"),
    ("/console/access-requests/{id}", "approver"),
]


@pytest.mark.parametrize(("path", "who"), BY_ID, ids=str)
@settings(FUZZ, max_examples=25)
@given(value=AWKWARD.filter(lambda text: text not in {"", ".", ".."}))
def test_no_id_in_a_read_gives_a_server_error(
    reading: Reading, path: str, who: str, value: str
) -> None:
    api, _, people = reading
    url = path.format(id=quote(value, safe=""))
    if path.startswith("/console/"):
        response = people[who].get(url)
    else:
        response = api.client.get(url, headers=api.auth(who))
    assert_answered(response, path, value, problem=False)
