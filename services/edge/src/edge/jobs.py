"""The aggregators' submit-then-poll API: /api/v2/generate, its events (SSE), cancel, webhooks.

Thin adapters over the generations core, whose every read is scoped to the caller's
account (another account's generation is 404 exactly like a missing one); the bodies are
presenters.v2's generation object, the errors the gateway's `{"error": {...}}` object.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from edge.deps import auth, core_dep, idempotency_key, mesh_dep, parse_json, settings_dep
from edge.errors import openai_error
from edge.generations import Generations
from edge.mesh import Caller, Mesh
from edge.schemas import GenerateBody
from edge.settings import EdgeSettings
from lifecycle import is_terminal
from pixelmesh.common.v1 import generation_pb2 as gen
from presenters import v2
from presenters.generation import STATE_NAMES, TERMINAL_NAMES, state_name
from svckit.errors import ErrorCode, GatewayError, invalid

router = APIRouter()

# One SSE connection follows a generation at most this long; the client then reconnects
# with Last-Event-ID and carries on where it was.
EVENTS_MAX_SECONDS = 600.0
PING_SECONDS = 15


async def present(core: Generations, generation: gen.Generation) -> dict:
    return v2.v2_generation(generation, await core.image_urls(generation))


def preferred_wait(prefer: str | None, most: int) -> tuple[int | None, str]:
    """The client's wait for the end (None: it states none, the model's bound holds) and the
    Preference-Applied header's value: RFC 7240 `Prefer`, read as Replicate reads it.
    `respond-async` never waits, `wait=N` waits up to N seconds (at most `most`), a bare
    `wait` the most. A `wait` that is no whole number of seconds is a 400 naming Prefer."""
    for preference in (prefer or "").split(","):
        token, _, value = preference.partition(";")[0].strip().partition("=")
        token, value = token.strip().lower(), value.strip().strip('"')
        if token == "respond-async":
            return 0, "respond-async"
        if token == "wait":
            if not value:
                return most, f"wait={most}"
            if not value.isdigit():
                raise invalid(f"Prefer: wait must be a whole number of seconds; got {value[:20]!r}.", "Prefer")
            seconds = min(int(value), most)
            return seconds, f"wait={seconds}"
    return None, ""


@router.post("/api/v2/generate")
async def v2_submit(
    request: Request, who: Caller = auth, core: Generations = core_dep, settings: EdgeSettings = settings_dep
) -> JSONResponse:
    """Submit, then wait a while for the end (the model's bound, or the client's `Prefer`):
    `completed` with the result when it came in time, else `pending` with its ETA."""
    most = settings.edge_v2_max_wait_seconds
    asked, applied = preferred_wait(request.headers.get("prefer"), most)
    params = (await parse_json(request, GenerateBody)).to_params(default_format="webp")
    submitted = await core.submit(who, params, idempotency_key=idempotency_key(request))
    generation = submitted.generation
    wait = asked if asked is not None else min(generation.sync_wait_seconds, most)
    if wait > 0 and not is_terminal(generation):
        try:
            generation = await core.wait(who, generation.id, wait)
        except GatewayError:
            # Not ended in time, or status unreachable: the job stands, so it is answered
            # as last known (pending, to poll), never as an error that would lose its id.
            with contextlib.suppress(GatewayError):
                generation = await core.get(who, generation.id)
    headers = {"Preference-Applied": applied} if applied else None
    return JSONResponse(await present(core, generation), headers=headers)


@router.get("/api/v2/generate/{generation_id}")
async def v2_get(generation_id: str, who: Caller = auth, core: Generations = core_dep) -> JSONResponse:
    return JSONResponse(await present(core, await core.get(who, generation_id)))


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
async def v2_events(generation_id: str, request: Request, who: Caller = auth, core: Generations = core_dep) -> Response:
    """Server-sent events, one per change: queued, running (with progress), then one of
    completed (with the images), failed (with the error) or cancelled; the stream ends
    after it. Each event's data is the GET /api/v2/generate/{id} object."""
    await core.get(who, generation_id)  # 404 before the stream starts
    seen, last_name = parse_last_event_id(request.headers.get("last-event-id"))
    if last_name in TERMINAL_NAMES:
        return Response(status_code=204)  # the client saw the end: 204 stops EventSource reconnecting

    async def events() -> AsyncIterator[dict]:
        try:
            async for state in core.watch(who, generation_id, EVENTS_MAX_SECONDS):
                if state.version <= seen:
                    continue
                yield {
                    "event": state_name(state),
                    "id": event_id(state),
                    "data": json.dumps(await present(core, state)),
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
async def v2_cancel(generation_id: str, who: Caller = auth, core: Generations = core_dep) -> JSONResponse:
    """Stops the job and releases its price; 409 (with the generation) once it has ended."""
    try:
        cancelled = await core.cancel(who, generation_id, "Cancelled by the client.")
    except GatewayError as err:
        if err.code is not ErrorCode.CONFLICT:
            raise
        return openai_error(err, generation=await present(core, await core.get(who, generation_id)))
    return JSONResponse(await present(core, cancelled))


@router.get("/api/v2/webhooks/secret")
async def webhook_secret(who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    """The secret this API key's webhooks are signed with, and how to check a signature."""
    return JSONResponse(
        {
            "secret": await mesh.webhook_secret(who),
            "algorithm": "HMAC-SHA256",
            "signed_payload": f"<{v2.WEBHOOK_TIMESTAMP_HEADER}>.<raw request body>",
            "signature_header": v2.WEBHOOK_SIGNATURE_HEADER,
            "signature_format": "v1=<lowercase hex digest>",
            "timestamp_header": v2.WEBHOOK_TIMESTAMP_HEADER,
            "delivery_header": v2.WEBHOOK_DELIVERY_HEADER,
        }
    )
