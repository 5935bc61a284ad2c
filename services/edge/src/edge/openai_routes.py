"""OpenAI's Images API: /v1/images/generations, /v1/images/edits, /v1/images/variations."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse

from edge import docs
from edge.deps import annotate, auth, json_body, mesh_dep, settings_dep
from edge.mesh import Caller, Mesh, new_upload_id
from edge.presenters import failure, openai_images
from edge.schemas import ImageForm, OpenAIImageBody, VariationForm, parse_body
from edge.settings import EdgeSettings
from edge.streaming import image_events, timeout_error
from edge.uploads import check_file, check_mask, fit_size, read_form
from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode, GatewayError, invalid

router = APIRouter(tags=["OpenAI Images API"])
MAX_IDEMPOTENCY_KEY = 255


def idempotency_key(request: Request) -> str:
    """The Idempotency-Key header, passed to routing (which dedups retried submits)."""
    key = request.headers.get("idempotency-key", "").strip()
    if len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable():
        raise invalid(f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY} printable characters.", "Idempotency-Key")
    return key


@router.post(
    "/v1/images/generations",
    summary="Create images from a prompt",
    openapi_extra=docs.json_body(OpenAIImageBody, idempotent=True),
    responses=docs.image_responses(stream=True),
)
async def images_generations(
    request: Request, who: Caller = auth, mesh: Mesh = mesh_dep, settings: EdgeSettings = settings_dep
) -> Response:
    started = time.monotonic()
    body = parse_body(OpenAIImageBody, await json_body(request))
    generation = await mesh.submit(who, body.to_params(default_format="png"), idempotency_key=idempotency_key(request))
    return await respond(mesh, generation, settings, started, "image_generation")


@router.post(
    "/v1/images/edits",
    summary="Edit images (and an optional mask) with a prompt",
    openapi_extra=docs.multipart_body(ImageForm, files=("image", "mask"), required=("image", "prompt")),
    responses=docs.image_responses(stream=True),
)
async def images_edits(
    request: Request, who: Caller = auth, mesh: Mesh = mesh_dep, settings: EdgeSettings = settings_dep
) -> Response:
    started = time.monotonic()
    fields, images, mask = await read_form(request)
    params = parse_body(ImageForm, fields).to_params(gen.GENERATION_KIND_EDIT)
    generation = await submit_with_uploads(request, who, mesh, params, images, mask)
    return await respond(mesh, generation, settings, started, "image_edit")


@router.post(
    "/v1/images/variations",
    summary="Create variations of an image",
    openapi_extra=docs.multipart_body(VariationForm, files=("image",), required=("image",)),
    responses=docs.image_responses(stream=False),
)
async def images_variations(
    request: Request, who: Caller = auth, mesh: Mesh = mesh_dep, settings: EdgeSettings = settings_dep
) -> Response:
    started = time.monotonic()
    fields, images, mask = await read_form(request)
    if mask is not None:
        raise invalid("Variations take no mask.", "mask")
    params = parse_body(VariationForm, fields).to_params()
    generation = await submit_with_uploads(request, who, mesh, params, images, None)
    return await respond(mesh, generation, settings, started, "image_generation")


async def submit_with_uploads(
    request: Request, who: Caller, mesh: Mesh, params: gen.GenerationParams, images, mask
) -> gen.Generation:
    """Check the request with routing, check and store the files, then submit.

    Routing's dry run comes first so a request the model cannot take stores nothing; the
    files are stored under one upload id before the job is queued (workers read them from
    storage by object key).
    """
    params.input_images.extend(gen.InputImage(object_key="pending", role="image") for _ in images)
    if mask is not None:
        params.input_images.append(gen.InputImage(object_key="pending", role="mask"))
    checked = await mesh.validate(params)
    rule = checked.model.edits if params.kind == gen.GENERATION_KIND_EDIT else checked.model.variations
    uploads = [await check_file(f, rule, role="image", model=checked.model.id) for f in images]
    if mask is not None:
        uploads.append(await check_file(mask, rule, role="mask", model=checked.model.id))
        check_mask(uploads[-1], uploads[0])
    if checked.size == "auto":
        params.size = fit_size(list(rule.sizes), uploads[0].width, uploads[0].height) or "auto"
    upload_id = new_upload_id()
    stored = await asyncio.gather(*(mesh.store_input(who, upload_id, i, u) for i, u in enumerate(uploads)))
    del params.input_images[:]
    params.input_images.extend(stored)
    return await mesh.submit(who, params, idempotency_key=idempotency_key(request))


async def respond(
    mesh: Mesh, generation: gen.Generation, settings: EdgeSettings, started: float, kind: str
) -> Response:
    """SSE for stream=true, else wait for the terminal state and answer an ImagesResponse."""
    annotate(generation)
    timeout = settings.edge_sync_timeout_seconds
    if generation.params.stream:
        return EventSourceResponse(image_events(mesh, generation, kind, timeout), ping=15)
    final = await wait_terminal(mesh, generation, timeout)
    if final.state != gen.GENERATION_STATE_SUCCEEDED:
        raise failure(final)
    return JSONResponse(await openai_images(mesh, final, final.params.response_format or "url", started))


async def wait_terminal(mesh: Mesh, generation: gen.Generation, timeout: float) -> gen.Generation:
    """The generation's terminal state; past the timeout, 504 naming its id."""
    try:
        return await mesh.wait_terminal(generation.id, timeout)
    except GatewayError as err:
        if err.code is not ErrorCode.TIMEOUT:
            raise
    raise timeout_error(generation.id, timeout)
