"""The Midjourney proxy task API (the image models index): /mj/submit/* and /mj/task/*, on the same generations.

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

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from edge import mj_mapping as mjm
from edge.deps import auth, core_dep, idempotency_key, parse_json
from edge.generations import Generations
from edge.inputs import Upload
from edge.mesh import Caller
from pixelmesh.common.v1 import generation_pb2 as gen
from presenters.mj import mj_task
from svckit.errors import ErrorCode, GatewayError, invalid

router = APIRouter()

MAX_LIST_IDS = 500

Submission = tuple[gen.GenerationParams, list[Upload]]


def decode_inputs(images: list[str], param: str) -> list[Upload]:
    """The request's base64 images, decoded and checked (nothing is stored yet)."""
    return [
        mjm.decode_image(value, f"{param}[{i}]" if param.endswith("Array") else param) for i, value in enumerate(images)
    ]


async def task_json(core: Generations, generation: gen.Generation) -> dict:
    return mj_task(generation, await core.image_urls(generation))


async def proxy_answer(work: Awaitable[dict | list[dict]]) -> JSONResponse:
    """The route's answer, or its failure as the proxies' result (HTTP 404 with code 3 for
    an unknown task, else HTTP 200 with the failure code)."""
    try:
        return JSONResponse(await work)
    except GatewayError as err:
        status = 404 if err.code is ErrorCode.NOT_FOUND else 200
        return JSONResponse(mjm.failure_result(err), status_code=status)


async def mj_submit(
    request: Request, build: Callable[[], Awaitable[Submission]], core: Generations, who: Caller
) -> JSONResponse:
    """Parse and build the params, submit, answer with a SubmitResultVO (errors as proxy codes)."""

    async def work() -> dict:
        key = idempotency_key(request)
        params, uploads = await build()
        submitted = await core.submit(who, params, idempotency_key=key, uploads=uploads)
        generation = submitted.generation
        if submitted.replayed:
            # The first submit's generation, as it is now (the reservation kept its first state).
            task = await task_json(core, await core.get(who, generation.id))
            return mjm.submit_result(
                mjm.EXISTED, "Task already exists", generation.id, status=task["status"], imageUrl=task["imageUrl"]
            )
        return mjm.submit_result(
            mjm.SUCCESS, "Submit success", generation.id, model=generation.model, etaSeconds=generation.eta_seconds
        )

    return await proxy_answer(work())


@router.post("/mj/submit/imagine")
async def imagine(request: Request, who: Caller = auth, core: Generations = core_dep) -> JSONResponse:
    async def build() -> Submission:
        params, images = mjm.imagine_params(await parse_json(request, mjm.ImagineBody))
        return params, decode_inputs(images, "base64Array")

    return await mj_submit(request, build, core, who)


@router.post("/mj/submit/blend")
async def blend(request: Request, who: Caller = auth, core: Generations = core_dep) -> JSONResponse:
    async def build() -> Submission:
        params, images = mjm.blend_params(await parse_json(request, mjm.BlendBody))
        return params, decode_inputs(images, "base64Array")

    return await mj_submit(request, build, core, who)


@router.post("/mj/submit/describe")
async def describe(request: Request, who: Caller = auth, core: Generations = core_dep) -> JSONResponse:
    async def build() -> Submission:
        params, images = mjm.describe_params(await parse_json(request, mjm.DescribeBody))
        return params, decode_inputs(images, "base64")

    return await mj_submit(request, build, core, who)


async def _parent(core: Generations, who: Caller, task_id: str | None) -> gen.Generation:
    if not task_id or not task_id.strip():
        raise invalid("taskId must not be empty.", "taskId")
    try:
        return await core.get(who, task_id.strip())
    except GatewayError as err:
        if err.code is ErrorCode.NOT_FOUND:
            raise GatewayError(
                ErrorCode.NOT_FOUND, f"The task {task_id} does not exist or has expired.", param="taskId"
            ) from None
        raise


@router.post("/mj/submit/change")
async def change(request: Request, who: Caller = auth, core: Generations = core_dep) -> JSONResponse:
    async def build() -> Submission:
        body = await parse_json(request, mjm.ChangeBody)
        return mjm.change_params(body, await _parent(core, who, body.taskId)), []

    return await mj_submit(request, build, core, who)


@router.post("/mj/submit/simple-change")
async def simple_change(request: Request, who: Caller = auth, core: Generations = core_dep) -> JSONResponse:
    async def build() -> Submission:
        body = mjm.parse_simple_change(await parse_json(request, mjm.SimpleChangeBody))
        return mjm.change_params(body, await _parent(core, who, body.taskId)), []

    return await mj_submit(request, build, core, who)


@router.post("/mj/submit/action")
async def action(request: Request, who: Caller = auth, core: Generations = core_dep) -> JSONResponse:
    async def build() -> Submission:
        body = await parse_json(request, mjm.ActionBody)
        return mjm.action_params(body, await _parent(core, who, body.taskId)), []

    return await mj_submit(request, build, core, who)


@router.get("/mj/task/{task_id}/fetch")
async def fetch(task_id: str, who: Caller = auth, core: Generations = core_dep) -> JSONResponse:
    return JSONResponse(await task_json(core, await core.get(who, task_id)))


@router.post("/mj/task/list-by-condition")
@router.post("/mj/task/list-by-ids")
async def list_by_condition(request: Request, who: Caller = auth, core: Generations = core_dep) -> JSONResponse:
    """The caller's tasks among `ids` (unknown ids and other accounts' are left out)."""

    async def work() -> list[dict]:
        body = await parse_json(request, mjm.TaskConditionBody)
        ids = [i.strip() for i in body.ids if i.strip()]
        if len(ids) > MAX_LIST_IDS:
            raise invalid(f"At most {MAX_LIST_IDS} ids at once.", "ids")
        found = await core.list(who, ids)
        return list(await asyncio.gather(*(task_json(core, g) for g in found)))

    return await proxy_answer(work())


@router.post("/mj/task/{task_id}/cancel")
async def cancel(task_id: str, who: Caller = auth, core: Generations = core_dep) -> JSONResponse:
    """trueai's cancel: the task ends as FAILURE (failReason says cancelled); refunded."""

    async def work() -> dict:
        await core.cancel(who, task_id, "Cancelled by the client.")
        return mjm.submit_result(mjm.SUCCESS, "Cancelled", task_id)

    return await proxy_answer(work())
