"""The OpenAPI document: what FastAPI derives from the routes, completed to match the server.

FastAPI describes declared body models, path and query parameters, and documents a 422
that this server never sends. The document served at ``/openapi.json`` is that one with:

* 400 ``application/problem+json`` (never 422) on every operation, 401 and 403 on every
  operation that takes a credential, and a problem-details ``default`` for the rest
  (404, 405, 409, 410, 413, 429, 503);
* the bodies the SSF and AuthZEN routes parse by hand (their protocols' shapes: unknown
  members ignored, AuthZEN's plain-text 400, RFC 8936's ``{"err", "description"}``), and
  the media types of Mission Status, the JWKS, metrics and SSE;
* the AuthZEN evaluation route and the usage report route, plain Starlette routes for
  speed (the usage body's schema taken from the models the route validates with).

``tests/api/test_openapi_schemathesis.py`` runs schemathesis against a live server with
this document, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any

from fastapi import FastAPI
from pydantic import TypeAdapter

from api.routes.usage import report_usage
from api.schemas import UsageIn, UsageReportsIn
from ledger.domain.streams import (
    DELIVERY_METHODS,
    MAX_STREAM_RESOURCES,
    STREAM_ALGS,
    StreamStatus,
)

JSON = "application/json"
PROBLEM_JSON = "application/problem+json"

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_body(schema: Schema, *, required: bool = True) -> Schema:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def _json_response(description: str, schema: Schema, media: str = JSON) -> Schema:
    return {"description": description, "content": {media: {"schema": schema}}}


def _problem(description: str) -> Schema:
    return _json_response(description, _ref("Problem"), PROBLEM_JSON)


_TEXT: Schema = {"type": "string"}
_OBJECT: Schema = {"type": "object"}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _string(max_length: int, *, min_length: int = 0) -> Schema:
    return {"type": "string", "minLength": min_length, "maxLength": max_length}


_STREAM_RESOURCES: Schema = {
    "type": "array",
    "description": "The resources a PEP's stream guards (required unless the caller is an "
    "admin): absolute URIs, each covering itself and everything below it. The stream "
    "carries only Missions and Mandates whose authority touches one of them.",
    "minItems": 1,
    "maxItems": MAX_STREAM_RESOURCES,
    "items": _string(2048, min_length=1),
}


def _status(reason: Schema) -> Schema:
    return {
        "type": "object",
        "required": ["stream_id", "status"],
        "properties": {
            "stream_id": _TEXT,
            "status": {"enum": [s.value for s in StreamStatus]},
            "reason": reason,
        },
    }


COMPONENTS: dict[str, Schema] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details, with the same code as a plain string.",
        "required": ["type", "title", "status", "detail", "code"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "code": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["pointer", "detail"],
                    "properties": {"pointer": {"type": "string"}, "detail": {"type": "string"}},
                },
            },
        },
    },
    # ------------------------------------------------------------------ SSF 1.0
    "SsfDelivery": {
        "type": "object",
        "required": ["method"],
        "additionalProperties": False,
        "properties": {
            "method": {"enum": list(DELIVERY_METHODS)},
            "endpoint_url": _string(2048),
            "authorization_header": _string(4096, min_length=1),
        },
    },
    "SsfReceiverMembers": {
        "type": "object",
        "description": "The receiver-supplied members (null: absent). Transmitter-supplied "
        "members, when sent, must equal their current values; unknown members are ignored.",
        "properties": {
            "delivery": _nullable(_ref("SsfDelivery")),
            "events_requested": _nullable(
                {"type": "array", "maxItems": 32, "items": _string(512, min_length=1)}
            ),
            "description": _nullable(_string(1024)),
            "signing_alg": {"enum": list(STREAM_ALGS)},
            "resources": _nullable(_STREAM_RESOURCES),
        },
    },
    "SsfStreamChange": {
        "allOf": [
            _ref("SsfReceiverMembers"),
            {"type": "object", "required": ["stream_id"], "properties": {"stream_id": _TEXT}},
        ]
    },
    "SsfStream": {
        "type": "object",
        "description": "An SSF stream configuration (SSF 1.0 section 8.1.1).",
        "required": [
            "stream_id",
            "iss",
            "aud",
            "delivery",
            "events_supported",
            "events_delivered",
            "min_verification_interval",
            "signing_alg",
        ],
        "properties": {
            "stream_id": _TEXT,
            "iss": _TEXT,
            "aud": _TEXT,
            "delivery": _ref("SsfDelivery"),
            "events_supported": {"type": "array", "items": _TEXT},
            "events_requested": {"type": "array", "items": _TEXT},
            "events_delivered": {"type": "array", "items": _TEXT},
            "description": _TEXT,
            "min_verification_interval": {"type": "integer", "minimum": 0},
            "signing_alg": {"enum": list(STREAM_ALGS)},
            "resources": _STREAM_RESOURCES,
        },
    },
    "SsfStatus": _status(_TEXT),
    "SsfStatusChange": _status(_nullable(_string(1024))),
    "SsfSubject": {
        "type": "object",
        "description": "An RFC 9493 subject identifier.",
        "required": ["format"],
        "maxProperties": 16,
        "properties": {"format": _TEXT},
    },
    "SsfSubjectChange": {
        "type": "object",
        "required": ["stream_id", "subject"],
        "properties": {
            "stream_id": _TEXT,
            "subject": _ref("SsfSubject"),
            "verified": _nullable({"type": "boolean"}),
        },
    },
    "SsfVerification": {
        "type": "object",
        "required": ["stream_id"],
        "properties": {"stream_id": _TEXT, "state": _nullable(_string(1024))},
    },
    "SsfPoll": {
        "type": "object",
        "description": "An RFC 8936 poll: acknowledge, report errors, receive pending SETs.",
        "properties": {
            "maxEvents": {"type": "integer", "minimum": 0},
            "returnImmediately": {"type": "boolean"},
            "ack": {"type": "array", "maxItems": 1000, "items": _string(256, min_length=1)},
            "setErrs": {
                "type": "object",
                "maxProperties": 1000,
                "additionalProperties": {
                    "type": "object",
                    "required": ["err"],
                    "properties": {
                        "err": _string(256, min_length=1),
                        "description": _string(2048),
                    },
                },
            },
        },
    },
    "SsfPollAnswer": {
        "type": "object",
        "required": ["sets", "moreAvailable"],
        "properties": {
            "sets": {"type": "object", "additionalProperties": _TEXT},
            "moreAvailable": {"type": "boolean"},
        },
    },
    "SsfPollError": {
        "type": "object",
        "required": ["err", "description"],
        "properties": {"err": _TEXT, "description": _TEXT},
    },
    # ------------------------------------------------------------------ AuthZEN 1.0
    "AuthZenEntity": {
        "type": "object",
        "required": ["type", "id"],
        "properties": {
            "type": _string(4096, min_length=1),
            "id": _string(4096, min_length=1),
            "properties": _OBJECT,
        },
    },
    "AuthZenAction": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": _string(4096, min_length=1), "properties": _OBJECT},
    },
    "AuthZenEvaluation": {
        "type": "object",
        "required": ["subject", "action", "resource"],
        "properties": {
            "subject": _ref("AuthZenEntity"),
            "action": _ref("AuthZenAction"),
            "resource": _ref("AuthZenEntity"),
            "context": _OBJECT,
        },
    },
    "AuthZenDecision": {
        "type": "object",
        "required": ["decision"],
        "properties": {"decision": {"type": "boolean"}, "context": _OBJECT},
    },
    "AuthZenEvaluations": {
        "type": "object",
        "description": "Defaults (subject, action, resource, context) merged into each item of "
        "evaluations; an item that is not a valid request is decided false. Without "
        "evaluations, the defaults are one request, answered by one decision.",
        "properties": {
            "subject": _OBJECT,
            "action": _OBJECT,
            "resource": _OBJECT,
            "context": _OBJECT,
            "evaluations": {"type": "array", "maxItems": 256},
            "options": {
                "type": "object",
                "properties": {
                    "evaluations_semantic": {
                        "enum": ["execute_all", "deny_on_first_deny", "permit_on_first_permit"]
                    }
                },
            },
        },
    },
    "AuthZenDecisions": {
        "anyOf": [
            {
                "type": "object",
                "required": ["evaluations"],
                "properties": {"evaluations": {"type": "array", "items": _ref("AuthZenDecision")}},
            },
            _ref("AuthZenDecision"),
        ]
    },
    "AuthZenPageRequest": {
        "type": "object",
        "properties": {
            "token": _TEXT,
            "limit": {"type": "integer", "minimum": 0, "maximum": 10_000},
        },
    },
    "AuthZenSearch": {
        "type": "object",
        "description": "A search: the entity searched for needs only its type.",
        "required": ["subject", "action", "resource"],
        "properties": {
            "subject": _OBJECT,
            "action": _ref("AuthZenAction"),
            "resource": _OBJECT,
            "context": _OBJECT,
            "page": _ref("AuthZenPageRequest"),
        },
    },
    "AuthZenSearchResults": {
        "type": "object",
        "required": ["results"],
        "properties": {
            "results": {"type": "array", "items": _OBJECT},
            "page": {
                "type": "object",
                "required": ["next_token"],
                "properties": {
                    "next_token": _TEXT,
                    "count": {"type": "integer"},
                    "total": {"type": "integer"},
                },
            },
            "context": {
                "type": "object",
                "description": "evaluation_id: the call's record in the decision log; on a "
                "stale replica also the stale_state reason",
            },
        },
    },
}

_AUTHZEN_400 = {
    "description": "A malformed request: AuthZEN's plain-text error message",
    "content": {"text/plain": {"schema": _TEXT}},
}


def _authzen(request: str, answer: str, description: str) -> Schema:
    return {
        "requestBody": _json_body(_ref(request)),
        "responses": {"200": _json_response(description, _ref(answer)), "400": _AUTHZEN_400},
    }


_NO_STORE_STREAM = _json_response("The stream's configuration", _ref("SsfStream"))

#: What FastAPI cannot see, by (method, path): request bodies and answers.
OPERATIONS: dict[tuple[str, str], Schema] = {
    ("post", "/access/v1/evaluations"): _authzen(
        "AuthZenEvaluations", "AuthZenDecisions", "The decisions"
    ),
    ("post", "/access/v1/search/subject"): _authzen(
        "AuthZenSearch", "AuthZenSearchResults", "The agents that may"
    ),
    ("post", "/access/v1/search/resource"): _authzen(
        "AuthZenSearch", "AuthZenSearchResults", "The resources the agent may act on"
    ),
    ("post", "/access/v1/search/action"): _authzen(
        "AuthZenSearch", "AuthZenSearchResults", "The actions the agent may perform"
    ),
    ("post", "/ssf/streams"): {
        "requestBody": _json_body(_ref("SsfReceiverMembers")),
        "responses": {"201": _json_response("The new stream", _ref("SsfStream"))},
    },
    ("get", "/ssf/streams"): {
        "responses": {
            "200": _json_response(
                "The stream named by stream_id, or without it every stream of the caller",
                {"anyOf": [_ref("SsfStream"), {"type": "array", "items": _ref("SsfStream")}]},
            )
        }
    },
    ("patch", "/ssf/streams"): {
        "requestBody": _json_body(_ref("SsfStreamChange")),
        "responses": {"200": _NO_STORE_STREAM},
    },
    ("put", "/ssf/streams"): {
        "requestBody": _json_body(_ref("SsfStreamChange")),
        "responses": {"200": _NO_STORE_STREAM},
    },
    ("get", "/ssf/status"): {
        "responses": {"200": _json_response("The stream's status", _ref("SsfStatus"))}
    },
    ("post", "/ssf/status"): {
        "requestBody": _json_body(_ref("SsfStatusChange")),
        "responses": {"200": _json_response("The stream's new status", _ref("SsfStatus"))},
    },
    ("post", "/ssf/subjects/add"): {
        "requestBody": _json_body(_ref("SsfSubjectChange")),
        "responses": {"200": {"description": "Added (no body)"}},
    },
    ("post", "/ssf/subjects/remove"): {"requestBody": _json_body(_ref("SsfSubjectChange"))},
    ("post", "/ssf/verify"): {"requestBody": _json_body(_ref("SsfVerification"))},
    ("post", "/ssf/poll/{stream_id}"): {
        "requestBody": _json_body(_ref("SsfPoll")),
        "responses": {
            "200": _json_response("Pending SETs, by jti", _ref("SsfPollAnswer")),
            "400": {
                "description": "A malformed poll (RFC 8936 section 2.4.4), or a malformed request",
                "content": {
                    JSON: {"schema": _ref("SsfPollError")},
                    PROBLEM_JSON: {"schema": _ref("Problem")},
                },
            },
        },
    },
    ("get", "/ssf/streams/{stream_id}/events"): {
        "responses": {
            "200": {
                "description": "The stream's SETs as Server-Sent Events",
                "content": {"text/event-stream": {"schema": _TEXT}},
            }
        }
    },
    ("post", "/mission-status"): {
        "requestBody": {
            "required": True,
            "content": {
                media: {
                    "schema": {
                        "type": "object",
                        "required": ["mission_id"],
                        "properties": {
                            "mission_id": _TEXT,
                            "audience": _string(2048),
                            "nonce": _string(256),
                        },
                    }
                }
                for media in ("application/x-www-form-urlencoded", JSON)
            },
        },
        "responses": {
            "200": {
                "description": "The Mission's state, signed (a compact JWS)",
                "content": {"application/mission-status-response+jwt": {"schema": _TEXT}},
            }
        },
    },
    ("get", "/metrics"): {
        "responses": {
            "200": {
                "description": "Prometheus text exposition",
                "content": {"text/plain": {"schema": _TEXT}},
            }
        }
    },
    ("get", "/.well-known/jwks.json"): {
        "responses": {
            "200": {
                "description": "The signing keys (public parts)",
                "content": {
                    "application/jwk-set+json": {
                        "schema": {
                            "type": "object",
                            "required": ["keys"],
                            "properties": {"keys": {"type": "array", "items": _OBJECT}},
                        }
                    }
                },
            }
        }
    },
    ("get", "/readyz"): {
        "responses": {
            "200": _json_response("Ready", _OBJECT),
            "503": _json_response("Not ready: the store does not answer, or lagging", _OBJECT),
        }
    },
}

#: The AuthZEN evaluation route (a plain Starlette route, which FastAPI does not describe).
EVALUATION_PATH: Schema = {
    "post": {
        "tags": ["authzen"],
        "summary": "Access Evaluation (OpenID AuthZEN Authorization API 1.0)",
        "description": "One decision from this replica's evaluation index. Needs the pep role.",
        "operationId": "evaluation_access_v1_evaluation_post",
        "security": [{"bearer": []}],
        **_authzen("AuthZenEvaluation", "AuthZenDecision", "The decision"),
    }
}


def _usage_path() -> tuple[Schema, Schema]:
    """The usage report route (a plain Starlette route) and the schemas its body refers to,
    as FastAPI would describe the route had it declared ``UsageIn | UsageReportsIn``."""
    either: TypeAdapter[UsageIn | UsageReportsIn] = TypeAdapter(UsageIn | UsageReportsIn)
    body = either.json_schema(ref_template="#/components/schemas/{model}")
    models: Schema = body.pop("$defs")
    path: Schema = {
        "post": {
            "tags": ["usage"],
            "summary": "Report Usage",
            "description": inspect.getdoc(report_usage),
            "operationId": "report_usage_v1_usage_post",
            "requestBody": _json_body(body | {"title": "Body"}),
            "responses": {"200": _json_response("The outcome, or one per report", _OBJECT)},
            "security": [{"bearer": []}],
        }
    }
    return path, models


def _complete(path: str, method: str, operation: Schema) -> None:
    responses: Schema = operation.setdefault("responses", {})
    responses.pop("422", None)
    extra = copy.deepcopy(OPERATIONS.get((method, path), {}))
    if "requestBody" in extra:
        operation["requestBody"] = extra["requestBody"]
    responses.update(extra.get("responses", {}))
    body = operation.get("requestBody", {}).get("content", {}).get(JSON, {})
    optional = body.get("schema", {}).get("anyOf", [])
    if len(optional) == 2 and {"type": "null"} in optional:
        # An optional body may be left out, but a JSON null is refused (api/routes/common.py).
        body["schema"] = next(s for s in optional if s != {"type": "null"})
    responses.setdefault("400", _problem("A malformed request"))
    if operation.get("security"):
        responses.setdefault("401", _problem("No credential, or one that is not valid"))
        responses.setdefault("403", _problem("The credential's role may not do this"))
    responses.setdefault("default", _problem("Any other error (problem details)"))


def build(app: FastAPI) -> Schema:
    """The completed document (FastAPI's own, cached by the app, is left untouched)."""
    document = copy.deepcopy(app.openapi())
    document["paths"]["/access/v1/evaluation"] = copy.deepcopy(EVALUATION_PATH)
    usage, usage_models = _usage_path()
    document["paths"]["/v1/usage"] = usage
    for path, item in document["paths"].items():
        for method, operation in item.items():
            _complete(path, method, operation)
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas.update(copy.deepcopy(COMPONENTS))
    schemas.update(usage_models)
    return document


def served(app: FastAPI) -> Schema:
    """``build``, once per app."""
    document: Schema | None = getattr(app.state, "openapi_document", None)
    if document is None:
        document = build(app)
        app.state.openapi_document = document
    return document
