"""The OpenAPI document served at ``/openapi.json`` describes the server (issue 10, C.13):
400 where FastAPI would say 422, the credential's 401 and 403, the SSF and AuthZEN bodies
that routes parse by hand, and a 405 whose ``Allow`` names exactly the methods the document
lists for the path. (tests/api/test_openapi_schemathesis.py checks the answers themselves.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from ledger.domain.actors import Actor
from ledger.domain.roles import Role
from ledger.settings import Settings

METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("openapi") / "data"))
    with TestClient(app) as started:
        key = app.state.services.ledger.issue_api_key(
            name="auditor-1", role=Role.AUDITOR, actor=Actor(type="cli", name="test")
        ).secret
        started.headers["Authorization"] = f"Bearer {key}"
        yield started


@pytest.fixture(scope="module")
def document(client: TestClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def test_no_operation_documents_a_422(document: dict[str, Any]) -> None:
    assert [(m, p) for m, p, op in operations(document) if "422" in op["responses"]] == []
    assert "HTTPValidationError" not in document["components"]["schemas"]


def test_every_operation_documents_its_400(document: dict[str, Any]) -> None:
    assert [(m, p) for m, p, op in operations(document) if "400" not in op["responses"]] == []


def test_every_operation_taking_a_credential_documents_401_and_403(
    document: dict[str, Any],
) -> None:
    guarded = [(m, p, op) for m, p, op in operations(document) if op.get("security")]
    assert len(guarded) > 30
    missing = [(m, p) for m, p, op in guarded if not {"401", "403"} <= set(op["responses"])]
    assert missing == []


def test_every_operation_taking_a_body_describes_it(document: dict[str, Any]) -> None:
    bare = [
        (m, p)
        for m, p, op in operations(document)
        if m in ("post", "put", "patch")
        and not any(
            media.get("schema") not in (None, {}, {"type": "object"})
            for media in op.get("requestBody", {}).get("content", {}).values()
        )
    ]
    assert bare == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/access/v1/evaluation"),
        ("post", "/access/v1/evaluations"),
        ("post", "/access/v1/search/action"),
        ("post", "/ssf/streams"),
        ("get", "/ssf/streams"),
        ("post", "/ssf/status"),
        ("post", "/ssf/poll/{stream_id}"),
    ],
)
def test_ssf_and_authzen_answers_are_described(
    document: dict[str, Any], method: str, path: str
) -> None:
    responses = document["paths"][path][method]["responses"]
    success = next(v for k, v in responses.items() if k.startswith("2"))
    assert success["content"]["application/json"]["schema"] not in ({}, {"type": "object"})


def test_authzen_400s_are_documented_as_plain_text(document: dict[str, Any]) -> None:
    for path in ("/access/v1/evaluation", "/access/v1/evaluations", "/access/v1/search/subject"):
        assert set(document["paths"][path]["post"]["responses"]["400"]["content"]) == {"text/plain"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1/proposals", "GET, POST"),
        ("PUT", "/ssf/status", "GET, POST"),
        ("OPTIONS", "/ssf/streams", "DELETE, GET, PATCH, POST, PUT"),
        ("GET", "/access/v1/evaluation", "POST"),
        ("OPTIONS", "/v1/mandates/introspect", "POST"),
    ],
)
def test_a_405_names_every_method_of_the_resource_in_allow(
    client: TestClient, method: str, path: str, allow: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["allow"] == allow


def test_every_path_answers_options_with_the_documented_methods_in_allow(
    client: TestClient, document: dict[str, Any]
) -> None:
    wrong = {}
    for path, item in document["paths"].items():
        concrete = path.replace("{", "").replace("}", "")
        response = client.options(concrete)
        documented = ", ".join(sorted(m.upper() for m in item if m in METHODS))
        if response.status_code != 405 or response.headers.get("allow") != documented:
            wrong[path] = (response.status_code, response.headers.get("allow"), documented)
    assert wrong == {}
