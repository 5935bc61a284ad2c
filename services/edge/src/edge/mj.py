"""The Midjourney proxy task API (seed 003): /mj/submit/* and /mj/task/*, on the same generations.

Submits answer HTTP 200 with the proxies' SubmitResultVO (`code` 1 accepted, 3 unknown
task, 4 bad parameters, 9 system error, 21 existed, 23 queue full, 24 banned prompt);
like trueai, a button on an unknown task is HTTP 404 with code 3. Tasks are generations:
the task id is the generation id, and the API key's account owns them (another account
gets 404 / code 3). Midjourney submits go to the catalog's `midjourney` model (botType
NIJI_JOURNEY: `niji`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from edge import mj_mapping as mjm
from edge.deps import annotate, auth, json_body, mesh_dep
from edge.jobs import idempotency_key
from edge.mesh import Caller, Mesh, Upload, new_upload_id
from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode, GatewayError, invalid
from svckit.shapes import mj_task

router = APIRouter()

MAX_LIST_IDS = 500

B = TypeVar("B", bound=BaseModel)


async def parse(model: type[B], request: Request) -> B:
    raw = await json_body(request)
    if not isinstance(raw, dict):
        raise invalid("The request body must be a JSON object.")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise invalid(f"Invalid value for '{param}': {first['msg']}.", param) from None


async def store_inputs(mesh: Mesh, who: Caller, images: list[str], param: str) -> list[gen.InputImage]:
    """Decode, check and store the request's base64 images (the storage service's input
    uploads, as the OpenAI edits use) before the job is queued."""
    decoded = [
        mjm.decode_image(value, f"{param}[{i}]" if param.endswith("Array") else param) for i, value in enumerate(images)
    ]
    upload_id = new_upload_id()
    uploads = [
        Upload(
            data=img.data,
            format=img.output_format,
            mime_type=img.mime_type,
            width=img.width,
            height=img.height,
            role="image",
        )
        for img in decoded
    ]
    return list(await asyncio.gather(*(mesh.store_input(who, upload_id, i, u) for i, u in enumerate(uploads))))


async def task_json(mesh: Mesh, generation: gen.Generation) -> dict:
    urls: list[str] = []
    if generation.state == gen.GENERATION_STATE_SUCCEEDED:
        urls = list(await asyncio.gather(*(mesh.image_url(ref) for ref in generation.images)))
    return mj_task(generation, urls)


async def mj_submit(
    request: Request, build: Callable[[], Awaitable[gen.GenerationParams]], mesh: Mesh, who: Caller
) -> JSONResponse:
    """Build the params, submit, answer with a SubmitResultVO (errors as proxy codes)."""
    try:
        key = idempotency_key(request)
        params = await build()
        generation, replayed = await mesh.submit_once(who, params, idempotency_key=key)
    except GatewayError as err:
        status = 404 if err.code is ErrorCode.NOT_FOUND else 200
        return JSONResponse(mjm.failure_result(err), status_code=status)
    annotate(generation)
    if replayed:
        # The first submit's generation, as it is now (the reservation kept its first state).
        task = await task_json(mesh, await mesh.generation(who, generation.id))
        body = mjm.submit_result(
            mjm.EXISTED, "Task already exists", generation.id, status=task["status"], imageUrl=task["imageUrl"]
        )
    else:
        body = mjm.submit_result(
            mjm.SUCCESS, "Submit success", generation.id, model=generation.model, etaSeconds=generation.eta_seconds
        )
    return JSONResponse(body)


@router.post("/mj/submit/imagine")
async def imagine(request: Request, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    async def build() -> gen.GenerationParams:
        params, images = mjm.imagine_params(await parse(mjm.ImagineBody, request))
        params.input_images.extend(await store_inputs(mesh, who, images, "base64Array"))
        return params

    return await mj_submit(request, build, mesh, who)


@router.post("/mj/submit/blend")
async def blend(request: Request, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    async def build() -> gen.GenerationParams:
        params, images = mjm.blend_params(await parse(mjm.BlendBody, request))
        params.input_images.extend(await store_inputs(mesh, who, images, "base64Array"))
        return params

    return await mj_submit(request, build, mesh, who)


@router.post("/mj/submit/describe")
async def describe(request: Request, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    async def build() -> gen.GenerationParams:
        params, images = mjm.describe_params(await parse(mjm.DescribeBody, request))
        params.input_images.extend(await store_inputs(mesh, who, images, "base64"))
        return params

    return await mj_submit(request, build, mesh, who)


async def _parent(mesh: Mesh, who: Caller, task_id: str | None) -> gen.Generation:
    if not task_id or not task_id.strip():
        raise invalid("taskId must not be empty.", "taskId")
    try:
        return await mesh.generation(who, task_id.strip())
    except GatewayError as err:
        if err.code is ErrorCode.NOT_FOUND:
            raise GatewayError(
                ErrorCode.NOT_FOUND, f"The task {task_id} does not exist or has expired.", param="taskId"
            ) from None
        raise


@router.post("/mj/submit/change")
async def change(request: Request, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    async def build() -> gen.GenerationParams:
        body = await parse(mjm.ChangeBody, request)
        return mjm.change_params(body, await _parent(mesh, who, body.taskId))

    return await mj_submit(request, build, mesh, who)


@router.post("/mj/submit/simple-change")
async def simple_change(request: Request, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    async def build() -> gen.GenerationParams:
        body = mjm.parse_simple_change(await parse(mjm.SimpleChangeBody, request))
        return mjm.change_params(body, await _parent(mesh, who, body.taskId))

    return await mj_submit(request, build, mesh, who)


@router.post("/mj/submit/action")
async def action(request: Request, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    async def build() -> gen.GenerationParams:
        body = await parse(mjm.ActionBody, request)
        return mjm.action_params(body, await _parent(mesh, who, body.taskId))

    return await mj_submit(request, build, mesh, who)


@router.get("/mj/task/{task_id}/fetch")
async def fetch(task_id: str, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    return JSONResponse(await task_json(mesh, await mesh.generation(who, task_id)))


@router.post("/mj/task/list-by-condition")
@router.post("/mj/task/list-by-ids")
async def list_by_condition(request: Request, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    """The caller's tasks among `ids` (unknown ids and other accounts' are left out)."""
    body = await parse(mjm.TaskConditionBody, request)
    ids = [i.strip() for i in body.ids if i.strip()]
    if len(ids) > MAX_LIST_IDS:
        raise invalid(f"At most {MAX_LIST_IDS} ids at once.", "ids")
    found = await mesh.generations(who, ids) if ids else []
    return JSONResponse(list(await asyncio.gather(*(task_json(mesh, g) for g in found))))


@router.post("/mj/task/{task_id}/cancel")
async def cancel(task_id: str, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    """trueai's cancel: the task ends as FAILURE (failReason says cancelled); refunded."""
    try:
        await mesh.cancel(who, task_id, "Cancelled by the client.")
    except GatewayError as err:
        status = 404 if err.code is ErrorCode.NOT_FOUND else 200
        return JSONResponse(mjm.failure_result(err), status_code=status)
    return JSONResponse(mjm.submit_result(mjm.SUCCESS, "Cancelled", task_id))
