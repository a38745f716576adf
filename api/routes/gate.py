"""Role gates that run before the request body is read.

FastAPI reads and validates a route's body before it solves any dependency, so a role
check in a dependency or a handler comes too late: a caller without the role would get
400 for a malformed body, learning how the body is judged, where it should get 403. A
route declares its gate with ``dependencies=[allowed(policy.X)]`` on a router built with
``route_class=GatedRoute``: the route class authenticates the caller and checks the gate
before anything else; the dependency checks it again in the ordinary order, so a gate on
a router without the class still holds (only later).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Depends, Request, Response
from fastapi.params import Depends as DependsParam
from fastapi.routing import APIRoute

from api.auth import PrincipalDep, principal_of
from api.json_body import JsonBodyRoute
from api.policy import Gate
from api.services import get_services


class _GateCheck:
    """The dependency form of a gate."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    async def __call__(self, principal: PrincipalDep) -> None:
        self.gate.check(principal)


def allowed(gate: Gate) -> Any:
    """The route dependency declaring ``gate`` (see the module docstring)."""
    return Depends(_GateCheck(gate))


def gates_of(route: APIRoute) -> list[Gate]:
    return [
        d.dependency.gate
        for d in route.dependencies
        if isinstance(d, DependsParam) and isinstance(d.dependency, _GateCheck)
    ]


class GatedRoute(JsonBodyRoute):
    """Checks the route's gates (authenticating the caller) before its body is read (by
    ``JsonBodyRoute``'s strict parser)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        gates = gates_of(self)
        if not gates:
            return handler

        async def gated(request: Request) -> Response:
            principal = await principal_of(request, await get_services(request))
            for gate in gates:
                gate.check(principal)
            return await handler(request)

        return gated
