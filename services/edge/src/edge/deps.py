"""What every route depends on: the generations core, the mesh, the caller behind the API
key; the one JSON body parser and the one Idempotency-Key rule of every dialect."""

from __future__ import annotations

import json
from typing import TypeVar

from fastapi import Depends, Request
from opentelemetry import trace
from pydantic import BaseModel

from edge.generations import Generations
from edge.mesh import Caller, Mesh
from edge.schemas import parse_body
from edge.settings import EdgeSettings
from svckit.errors import ErrorCode, GatewayError, invalid

NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
MAX_IDEMPOTENCY_KEY_CHARS = 255

B = TypeVar("B", bound=BaseModel)


# Dependencies are coroutines: FastAPI runs a plain `def` dependency in a worker thread,
# two thread hops per request for a dictionary lookup.
async def get_mesh(request: Request) -> Mesh:
    return request.app.state.mesh


async def get_generations(request: Request) -> Generations:
    return request.app.state.generations


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


# Route parameters: `who: Caller = auth`, `core: Generations = core_dep`, `mesh: Mesh = mesh_dep`.
auth = Depends(get_caller)
core_dep = Depends(get_generations)
mesh_dep = Depends(get_mesh)
settings_dep = Depends(get_settings)


async def parse_json(request: Request, model: type[B]) -> B:
    """The request's JSON body as `model`. Not JSON, not an object, or not valid for the
    model: an INVALID_REQUEST naming the field, which each dialect answers in its own
    format (OpenAI's error object, the Midjourney proxies' result codes)."""
    raw = await request.body()
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise invalid("We could not parse the JSON body of your request. Send a valid JSON object.") from None
    return parse_body(model, body)


def idempotency_key(request: Request) -> str:
    """The Idempotency-Key header ('' when absent): 1-255 printable ASCII characters."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return ""
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not all(" " <= c <= "~" for c in key):
        raise invalid(
            f"The Idempotency-Key header must be 1-{MAX_IDEMPOTENCY_KEY_CHARS} printable ASCII characters.",
            "Idempotency-Key",
        )
    return key
