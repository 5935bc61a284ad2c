"""OpenAI's Images API: /v1/images/generations, /v1/images/edits, /v1/images/variations.

Thin adapters over the generations core: parse the request (JSON, or multipart with the
image files), submit, then answer an ImagesResponse once the generation ended (or stream
its events with stream=true). Errors are OpenAI error objects (edge.errors).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from edge import docs
from edge.deps import auth, core_dep, idempotency_key, parse_json, settings_dep
from edge.generations import Generations
from edge.inputs import Input
from edge.mesh import Caller
from edge.schemas import ImageEditJsonBody, ImageForm, OpenAIImageBody, VariationForm, parse_body
from edge.settings import EdgeSettings
from edge.streaming import image_events, timeout_error
from edge.uploads import read_form
from pixelmesh.common.v1 import generation_pb2 as gen
from presenters.generation import error_of
from presenters.openai import images_response
from svckit.errors import ErrorCode, GatewayError, invalid

router = APIRouter(tags=["OpenAI Images API"])


@router.post(
    "/v1/images/generations",
    summary="Create images from a prompt",
    openapi_extra=docs.json_body(OpenAIImageBody, idempotent=True),
    responses=docs.image_responses(stream=True),
)
async def images_generations(
    request: Request, who: Caller = auth, core: Generations = core_dep, settings: EdgeSettings = settings_dep
) -> Response:
    started = time.monotonic()
    params = (await parse_json(request, OpenAIImageBody)).to_params(default_format="png")
    return await submit_and_answer(core, who, params, request, [], settings, started, "image_generation")


@router.post(
    "/v1/images/edits",
    summary="Edit images (and an optional mask) with a prompt",
    openapi_extra=docs.multipart_body(
        ImageForm, files=("image", "mask"), required=("image", "prompt"), json=ImageEditJsonBody
    ),
    responses=docs.image_responses(stream=True),
)
async def images_edits(
    request: Request, who: Caller = auth, core: Generations = core_dep, settings: EdgeSettings = settings_dep
) -> Response:
    """Multipart (`image` / `image[]` files, `mask`), or JSON with `images: [{image_url}]` and `mask`."""
    started = time.monotonic()
    inputs: list[Input]
    if request.headers.get("content-type", "").startswith("application/json"):
        params, inputs = (await parse_json(request, ImageEditJsonBody)).to_params()
    else:
        fields, uploads = await read_form(request)
        params, inputs = parse_body(ImageForm, fields).to_params(gen.GENERATION_KIND_EDIT), list(uploads)
    return await submit_and_answer(core, who, params, request, inputs, settings, started, "image_edit")


@router.post(
    "/v1/images/variations",
    summary="Create variations of an image",
    openapi_extra=docs.multipart_body(VariationForm, files=("image",), required=("image",)),
    responses=docs.image_responses(stream=False),
)
async def images_variations(
    request: Request, who: Caller = auth, core: Generations = core_dep, settings: EdgeSettings = settings_dep
) -> Response:
    started = time.monotonic()
    fields, uploads = await read_form(request)
    if any(u.role == "mask" for u in uploads):
        raise invalid("Variations take no mask.", "mask")
    params = parse_body(VariationForm, fields).to_params()
    return await submit_and_answer(core, who, params, request, uploads, settings, started, "image_generation")


async def submit_and_answer(
    core: Generations,
    who: Caller,
    params: gen.GenerationParams,
    request: Request,
    uploads: Sequence[Input],
    settings: EdgeSettings,
    started: float,
    kind: str,
) -> Response:
    """Submit; SSE for stream=true, else wait for the terminal state and answer an ImagesResponse."""
    submitted = await core.submit(who, params, idempotency_key=idempotency_key(request), uploads=uploads)
    generation = submitted.generation
    timeout = settings.edge_sync_timeout_seconds
    if generation.params.stream:
        return EventSourceResponse(image_events(core, who, generation, kind, timeout), ping=15)
    try:
        final = await core.wait(who, generation.id, timeout)
    except GatewayError as err:
        if err.code is not ErrorCode.TIMEOUT:
            raise
        raise timeout_error(generation.id, timeout) from None
    if final.state != gen.GENERATION_STATE_SUCCEEDED:
        raise error_of(final)
    response_format = final.params.response_format or "url"
    images = await (core.images_b64(final) if response_format == "b64_json" else core.image_urls(final))
    latency_ms = int((time.monotonic() - started) * 1000)
    return JSONResponse(images_response(final, images, response_format, latency_ms))
