"""OpenAI's streaming Images API over SSE (stream=true): partial images, then the final ones.

Events are exactly what the openai SDKs parse: `event: <type>` and `data: {"type": <type>, ...}`
with `image_generation.partial_image` (b64_json, partial_image_index) and
`image_generation.completed` (b64_json, usage), or `image_edit.*` for edits. A failure after
the stream has started is an `error` event whose data is `{"error": {...}}`, which the SDKs
raise as APIError.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from edge.errors import error_object
from edge.generations import Generations
from edge.mesh import Caller
from lifecycle import is_terminal
from pixelmesh.common.v1 import generation_pb2 as gen
from presenters.generation import error_of
from presenters.openai import stream_event
from svckit.errors import ErrorCode, GatewayError


def timeout_error(generation_id: str, timeout: float) -> GatewayError:
    return GatewayError(
        ErrorCode.TIMEOUT,
        f"The generation did not finish within {timeout:g} s. "
        f"Poll GET /api/v2/generate/{generation_id} for its result.",
        generation_id=generation_id,
    )


def _sse(event: str, payload: dict) -> dict[str, str]:
    return {"event": event, "data": json.dumps(payload, separators=(",", ":"))}


async def image_events(
    core: Generations, who: Caller, generation: gen.Generation, kind: str, timeout: float
) -> AsyncIterator[dict[str, str]]:
    """SSE messages for one generation until its terminal state (or the timeout)."""
    sent = 0
    try:
        async for state in core.watch(who, generation.id, timeout):
            while sent < len(state.partial_images):
                b64 = await core.image_b64(state.partial_images[sent])
                event = stream_event(kind, state, b64, partial_index=sent)
                yield _sse(event["type"], event)
                sent += 1
            if not is_terminal(state):
                continue
            if state.state != gen.GENERATION_STATE_SUCCEEDED:
                yield _sse("error", {"error": error_object(error_of(state))})
                return
            for ref in state.images:
                event = stream_event(kind, state, await core.image_b64(ref))
                yield _sse(event["type"], event)
            return
    except GatewayError as err:
        if err.code is not ErrorCode.TIMEOUT:
            yield _sse("error", {"error": error_object(err)})
            return
    yield _sse("error", {"error": error_object(timeout_error(generation.id, timeout))})
