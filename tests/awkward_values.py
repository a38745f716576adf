"""Awkward values for the "no input gives a server error" property tests: texts that once
passed a validation and failed later (a trailing newline, thousands of digits, an instant
that leaves years 1-9999 in UTC), any text, and any JSON value built from them; and the
two helpers those tests share (a body with one member changed, the answer checked)."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

EDGE = [
    "5\n",
    "1.5\n",
    "USD\n",
    "1" * 5_000,
    "9" * 37,
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "",
]

#: Settings of every such test: requests through the app take their time, and the app is a
#: fixture shared by the examples (they leave nothing another example could notice).
FUZZ = settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def awkward_text(*more: str, max_size: int = 40) -> st.SearchStrategy[str]:
    """An ``EDGE`` text (or one of ``more``), or any text."""
    return st.one_of(st.sampled_from([*EDGE, *more]), st.text(max_size=max_size))


def json_values(text: st.SearchStrategy[str]) -> st.SearchStrategy[object]:
    """Any JSON value (64-bit-plus integers and floats included) whose texts are ``text``."""
    scalar = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        text,
    )
    return st.recursive(
        scalar,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=6,
    )


def changed(body: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A copy of ``body`` with ``value`` at ``path`` (member names and list indexes; objects
    missing on the way are made)."""
    out = copy.deepcopy(body)
    node: Any = out
    for step in path[:-1]:
        if isinstance(step, str) and step not in node:
            node[step] = {}
        node = node[step]
    node[path[-1]] = value
    return out


def assert_answered(response: Any, *what: object, problem: bool = True) -> None:
    """The request was answered or refused, not failed (``what``: shown when it fails);
    with ``problem``, a refusal is a problem document."""
    assert response.status_code < 500, (*what, response.text)
    if problem and response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
