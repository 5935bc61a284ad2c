"""The aggregators' submit-then-poll API: /api/v2/generate, its events (SSE), cancel, webhooks.

Every route reaches a generation through Mesh.generation (or a Mesh method built on it),
which answers 404 for another account's generation exactly as for a missing one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from bus import is_terminal
from edge.deps import annotate, auth, json_body, mesh_dep
from edge.errors import openai_error
from edge.mesh import Caller, Mesh
from edge.presenters import v2_generation
from edge.schemas import GenerateBody, parse_body
from pixelmesh.common.v1 import generation_pb2 as gen
from svckit import shapes
from svckit.errors import ErrorCode, GatewayError, invalid
from svckit.shapes import STATE_NAMES, state_name

router = APIRouter()

MAX_IDEMPOTENCY_KEY_CHARS = 255
# One SSE connection follows a generation at most this long; the client then reconnects
# with Last-Event-ID and carries on where it was.
EVENTS_MAX_SECONDS = 600.0
PING_SECONDS = 15
TERMINAL_EVENTS = frozenset(
    STATE_NAMES[s]
    for s in (gen.GENERATION_STATE_SUCCEEDED, gen.GENERATION_STATE_FAILED, gen.GENERATION_STATE_CANCELLED)
)


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


@router.post("/api/v2/generate")
async def v2_submit(request: Request, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    body = parse_body(GenerateBody, await json_body(request))
    generation = await mesh.submit(who, body.to_params(default_format="webp"), idempotency_key=idempotency_key(request))
    annotate(generation)
    return JSONResponse(await v2_generation(mesh, generation))


@router.get("/api/v2/generate/{generation_id}")
async def v2_get(generation_id: str, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    return JSONResponse(await v2_generation(mesh, await mesh.generation(who, generation_id)))


def event_id(generation: gen.Generation) -> str:
    """`<version>-<state>`: a reconnecting client's Last-Event-ID says where it was."""
    return f"{generation.version}-{state_name(generation)}"


def parse_last_event_id(value: str | None) -> tuple[int, str]:
    """(version, state name) of the last event a client saw; (0, '') when none or unreadable."""
    version, _, name = (value or "").strip().partition("-")
    if not version.isdigit() or name not in STATE_NAMES.values():
        return 0, ""
    return int(version), name


@router.get("/api/v2/generate/{generation_id}/events")
async def v2_events(generation_id: str, request: Request, who: Caller = auth, mesh: Mesh = mesh_dep) -> Response:
    """Server-sent events, one per change: queued, running (with progress), then one of
    completed (with the images), failed (with the error) or cancelled; the stream ends
    after it. Each event's data is the GET /api/v2/generate/{id} object."""
    await mesh.generation(who, generation_id)
    seen, last_name = parse_last_event_id(request.headers.get("last-event-id"))
    if last_name in TERMINAL_EVENTS:
        return Response(status_code=204)  # the client saw the end: 204 stops EventSource reconnecting

    async def events() -> AsyncIterator[dict]:
        try:
            async for state in mesh.watch(generation_id, EVENTS_MAX_SECONDS):
                if state.version <= seen:
                    continue
                yield {
                    "event": state_name(state),
                    "id": event_id(state),
                    "data": json.dumps(await v2_generation(mesh, state)),
                }
                if is_terminal(state):
                    return
        except GatewayError as err:
            if err.code is ErrorCode.TIMEOUT:
                return  # the client reconnects with Last-Event-ID
            error = {"message": err.message, "code": err.code.value}
            yield {"event": "error", "data": json.dumps({"error": error})}

    return EventSourceResponse(events(), ping=PING_SECONDS)


@router.post("/api/v2/generate/{generation_id}/cancel")
async def v2_cancel(generation_id: str, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    """Stops the job and releases its price; 409 (with the generation) once it has ended."""
    try:
        cancelled = await mesh.cancel(who, generation_id, "Cancelled by the client.")
    except GatewayError as err:
        if err.code is not ErrorCode.CONFLICT:
            raise
        current = await v2_generation(mesh, await mesh.generation(who, generation_id))
        return openai_error(err, generation=current)
    return JSONResponse(await v2_generation(mesh, cancelled))


@router.get("/api/v2/webhooks/secret")
async def webhook_secret(who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    """The secret this API key's webhooks are signed with, and how to check a signature."""
    return JSONResponse(
        {
            "secret": await mesh.webhook_secret(who),
            "algorithm": "HMAC-SHA256",
            "signed_payload": f"<{shapes.WEBHOOK_TIMESTAMP_HEADER}>.<raw request body>",
            "signature_header": shapes.WEBHOOK_SIGNATURE_HEADER,
            "signature_format": "v1=<lowercase hex digest>",
            "timestamp_header": shapes.WEBHOOK_TIMESTAMP_HEADER,
            "delivery_header": shapes.WEBHOOK_DELIVERY_HEADER,
        }
    )
