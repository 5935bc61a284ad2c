"""What every route depends on: the mesh, the caller behind the API key, a JSON body."""

from __future__ import annotations

import json
from contextvars import ContextVar

from fastapi import Depends, Request
from opentelemetry import trace

from edge.mesh import Caller, Mesh
from edge.settings import EdgeSettings
from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode, GatewayError, invalid

NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)


# Dependencies are coroutines: FastAPI runs a plain `def` dependency in a worker thread,
# two thread hops per request for a dictionary lookup.
async def get_mesh(request: Request) -> Mesh:
    return request.app.state.mesh


async def get_settings(request: Request) -> EdgeSettings:
    return request.app.state.settings


async def get_caller(request: Request) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise GatewayError(ErrorCode.UNAUTHENTICATED, NO_KEY)
    who = await request.app.state.mesh.authenticate(key.strip())
    trace.get_current_span().set_attribute("pixelmesh.account.id", who.account_id)
    return who


# Route parameters: `who: Caller = auth`, `mesh: Mesh = mesh_dep`.
auth = Depends(get_caller)
mesh_dep = Depends(get_mesh)
settings_dep = Depends(get_settings)


async def json_body(request: Request) -> object:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise invalid("We could not parse the JSON body of your request. Send a valid JSON object.") from None


# The request being served, as the metrics middleware sees it: routes note the model here
# (a dict shared by reference, since the route may run in another task than the middleware).
REQUEST_LABELS: ContextVar[dict[str, str] | None] = ContextVar("request_labels", default=None)


def annotate(generation: gen.Generation) -> None:
    labels = REQUEST_LABELS.get()
    if labels is not None:
        labels["model"] = generation.model
    span = trace.get_current_span()
    span.set_attribute("pixelmesh.generation.id", generation.id)
    span.set_attribute("pixelmesh.model", generation.model)
