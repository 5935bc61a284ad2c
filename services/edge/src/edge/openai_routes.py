"""OpenAI's Images API: /v1/images/* and /v1/models."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from bus import is_terminal
from edge.deps import annotate, auth, json_body, mesh_dep, settings_dep
from edge.mesh import Caller, Mesh
from edge.presenters import failure, openai_images
from edge.schemas import OpenAIImageBody, parse_body
from edge.settings import EdgeSettings
from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode, GatewayError, invalid

router = APIRouter()


@router.post("/v1/images/generations")
async def images_generations(
    request: Request, who: Caller = auth, mesh: Mesh = mesh_dep, settings: EdgeSettings = settings_dep
) -> JSONResponse:
    started = time.monotonic()
    body = parse_body(OpenAIImageBody, await json_body(request))
    if body.stream:
        raise invalid("Streaming is not supported by this model.", "stream")
    if body.partial_images is not None:
        raise invalid("partial_images needs stream=true.", "partial_images")
    generation = await mesh.submit(who, body.to_params(default_format="png"))
    annotate(generation)
    final = await wait_terminal(mesh, generation, settings.edge_sync_timeout_seconds)
    if final.state != gen.GENERATION_STATE_SUCCEEDED:
        raise failure(final)
    return JSONResponse(await openai_images(mesh, final, body.response_format or "url", started))


@router.get("/v1/models")
async def models(who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    data = [
        {
            "id": m.id,
            "object": "model",
            "created": m.created,
            "owned_by": m.owned_by,
            "type": "image",
            "aliases": list(m.aliases),
            "sizes": list(m.sizes),
            "default_size": m.default_size,
            "max_images": m.max_images,
            "max_prompt_chars": m.max_prompt_chars,
            "qualities": list(m.qualities),
            "styles": list(m.styles),
            "output_formats": list(m.output_formats),
            "parameters": list(m.parameters),
        }
        for m in await mesh.list_models()
    ]
    return JSONResponse({"object": "list", "data": data})


async def wait_terminal(mesh: Mesh, generation: gen.Generation, timeout: float) -> gen.Generation:
    """Follow the generation to a terminal state; past the timeout, 504 naming its id."""
    latest = generation
    try:
        async for state in mesh.watch(generation.id, timeout):
            latest = state
            if is_terminal(state):
                return state
    except GatewayError as err:
        if err.code is not ErrorCode.TIMEOUT:
            raise
    raise GatewayError(
        ErrorCode.TIMEOUT,
        f"The generation did not finish within {timeout:g} s. Poll GET /api/v2/generate/{generation.id} for its result.",
        generation_id=latest.id,
    )
