"""Kling's image task API as aggregators pass it through (docs/provider-contracts-2.md section
8): /kling/v1/images/generations and /kling/v1/images/kolors-virtual-try-on, submit and get
by task id, on the same generations.

Every answer is Kling's envelope `{code, message, request_id, data}`: `data` is the task
(presenters.kling), an error leaves it out and carries Kling's code with its HTTP status
(1201 invalid parameter, 1301 content policy, 1000 authentication, 1102 balance used up,
1203 unknown model or task, 1302 too many requests, 5000-5002 server side). Tasks are
generations: the task id is the generation id, owned by the API key's account. Input
images (`image`, `human_image`, `cloth_image`) are base64 (with or without a data: prefix),
decoded and checked like every upload before anything is stored, or http(s) URLs the worker
reads (public hosts only). `external_task_id` is echoed in `task_info` and, unique per
account as on Kling, is the submit's Idempotency-Key when the header is absent.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from edge import docs
from edge.deps import MAX_IDEMPOTENCY_KEY_CHARS, core_dep, get_caller, idempotency_key, parse_json
from edge.errors import error_headers
from edge.generations import Generations
from edge.inputs import Input, Upload, decode_base64_image, read_image_url
from edge.mesh import Caller
from edge.schemas import checked_callback_url
from pixelmesh.common.v1 import generation_pb2 as gen
from presenters.kling import kling_envelope, kling_task
from svckit.errors import ErrorCode, GatewayError, invalid

router = APIRouter()

GENERATIONS = "/kling/v1/images/generations"
TRY_ON = "/kling/v1/images/kolors-virtual-try-on"
DEFAULT_MODEL = "kling-v1"
TRY_ON_FAMILY = "kolors-virtual-try-on"
DEFAULT_TRY_ON_MODEL = f"{TRY_ON_FAMILY}-v1"
DEFAULT_ASPECT_RATIO = "16:9"
MIN_INPUT_SIDE = 300
MAX_INPUT_BYTES = 10 * 1024 * 1024  # Kling: jpg/png of at most 10 MB
WIDEST_INPUT = 2.5
MAX_EXTERNAL_ID_CHARS = 200
EXTERNAL_KEY_PREFIX = "kling-external-task:"
TASK_RESPONSES: dict[int | str, dict] = {200: {"model": docs.KlingEnvelope, "description": "The task, in `data`"}}
# gateway error -> (HTTP status, Kling's code)
KLING_ERRORS: dict[ErrorCode, tuple[int, int]] = {
    ErrorCode.INVALID_REQUEST: (400, 1201),
    ErrorCode.CONFLICT: (400, 1201),
    ErrorCode.CONTENT_POLICY_VIOLATION: (400, 1301),
    ErrorCode.UNAUTHENTICATED: (401, 1000),
    ErrorCode.INSUFFICIENT_BALANCE: (429, 1102),
    ErrorCode.MODEL_NOT_FOUND: (404, 1203),
    ErrorCode.NOT_FOUND: (404, 1203),
    ErrorCode.RATE_LIMITED: (429, 1302),
    ErrorCode.PROVIDER_UNAVAILABLE: (503, 5001),
    ErrorCode.UNAVAILABLE: (503, 5001),
    ErrorCode.TIMEOUT: (504, 5002),
}


class _TaskBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model_name: str | None = None
    callback_url: str | None = None
    external_task_id: str | None = Field(default=None, max_length=MAX_EXTERNAL_ID_CHARS)


class GenerationBody(_TaskBody):
    """POST /kling/v1/images/generations (Kling's fields; `resolution` 2k is the catalog's
    provider option of that name, taken by kling-v2 from text only)."""

    model: str | None = None  # Kling's legacy name of model_name
    prompt: str
    negative_prompt: str | None = None
    image: str | None = None
    image_reference: Literal["subject", "face"] | None = None
    image_fidelity: float | None = Field(default=None, ge=0, le=1)
    human_fidelity: float | None = Field(default=None, ge=0, le=1)
    resolution: Literal["1k", "2k"] | None = None
    n: int | None = Field(default=None, ge=1, le=9)
    aspect_ratio: str | None = None


class TryOnBody(_TaskBody):
    """POST /kling/v1/images/kolors-virtual-try-on."""

    human_image: str
    cloth_image: str


def request_id() -> str:
    return uuid.uuid4().hex


def kling_error(err: GatewayError) -> JSONResponse:
    status, code = KLING_ERRORS.get(err.code, (500, 5000))
    body = kling_envelope(None, request_id(), code=code, message=err.message)
    return JSONResponse(body, status_code=status, headers=error_headers(err))


async def kling_answer(work: Awaitable[dict]) -> JSONResponse:
    """The task in Kling's envelope, or the failure as Kling reports one."""
    try:
        return JSONResponse(kling_envelope(await work, request_id()))
    except GatewayError as err:
        return kling_error(err)


def read_input(value: str, param: str, role: str) -> Input:
    """An input image as Kling takes one: an http(s) URL the worker reads, or base64 (bare,
    as Kling's docs send it, or a data URL) decoded and checked, stored after routing's checks."""
    if value.startswith(("http://", "https://", "data:")):
        image = read_image_url(value, param=param, role=role, max_bytes=MAX_INPUT_BYTES)
    else:
        image = decode_base64_image(value, param=param, role=role, max_bytes=MAX_INPUT_BYTES)
    if isinstance(image, Upload) and min(image.width, image.height) < MIN_INPUT_SIDE:
        raise invalid(
            f"{param} is {image.width}x{image.height}; both sides must be at least {MIN_INPUT_SIDE} px.", param
        )
    return image


def _task_params(body: _TaskBody, model: str, kind: gen.GenerationKind.ValueType) -> gen.GenerationParams:
    params = gen.GenerationParams(
        model=model, kind=kind, output_format=gen.OUTPUT_FORMAT_PNG, client_state=body.external_task_id or ""
    )
    if body.callback_url is not None:
        params.callback_url = checked_callback_url(body.callback_url, "callback_url")
        params.webhook_format = "kling"
    return params


def generation_params(body: GenerationBody) -> tuple[gen.GenerationParams, list[Input]]:
    if body.model_name and body.model and body.model_name != body.model:
        raise invalid("'model_name' and 'model' disagree; send model_name.", "model_name")
    if not body.prompt.strip():
        raise invalid("prompt must not be empty.", "prompt")
    model = body.model_name or body.model or DEFAULT_MODEL
    kind = gen.GENERATION_KIND_EDIT if body.image else gen.GENERATION_KIND_GENERATE
    params = _task_params(body, model, kind)
    params.prompt = body.prompt
    params.negative_prompt = body.negative_prompt or ""
    params.n = body.n or 1
    params.size = body.aspect_ratio or DEFAULT_ASPECT_RATIO
    if body.resolution == "2k":  # routing checks the model takes it (1k is Kling's default)
        params.provider_options.update({"resolution": "2k"})
    for name in ("image_reference", "image_fidelity", "human_fidelity"):
        if getattr(body, name) is not None and not body.image:
            raise invalid(f"{name} needs an image.", name)
    if body.image_fidelity is not None:
        params.image_fidelity = body.image_fidelity
    if body.human_fidelity is not None:
        params.human_fidelity = body.human_fidelity
    if not body.image:
        return params, []
    if body.negative_prompt:
        raise invalid("negative_prompt is not supported when image is set.", "negative_prompt")
    if body.resolution == "2k":
        raise invalid("resolution 2k is made from text only, not with an image.", "resolution")
    image = read_input(body.image, "image", body.image_reference or "image")
    if isinstance(image, Upload) and not 1 / WIDEST_INPUT <= image.width / image.height <= WIDEST_INPUT:
        raise invalid("image must have an aspect ratio between 1:2.5 and 2.5:1.", "image")
    return params, [image]


def try_on_params(body: TryOnBody) -> tuple[gen.GenerationParams, list[Input]]:
    model = body.model_name or DEFAULT_TRY_ON_MODEL
    if not model.startswith(TRY_ON_FAMILY):
        raise invalid(f"model_name must be a Kolors virtual try-on model ({TRY_ON_FAMILY}-v1, ...).", "model_name")
    params = _task_params(body, model, gen.GENERATION_KIND_EDIT)
    params.n = 1
    params.size = "auto"
    inputs = [
        read_input(body.human_image, "human_image", "person"),
        read_input(body.cloth_image, "cloth_image", "garment"),
    ]
    return params, inputs


def submission_key(request: Request, body: _TaskBody) -> str:
    key = idempotency_key(request)
    if not key and body.external_task_id:
        key = f"{EXTERNAL_KEY_PREFIX}{body.external_task_id}"
        if len(key) > MAX_IDEMPOTENCY_KEY_CHARS or not all(" " <= c <= "~" for c in body.external_task_id):
            raise invalid("external_task_id must be printable ASCII characters.", "external_task_id")
    return key


async def _submit(who: Caller, core: Generations, params: gen.GenerationParams, inputs: list[Input], key: str) -> dict:
    submitted = await core.submit(who, params, idempotency_key=key, uploads=inputs)
    generation = submitted.generation
    if submitted.replayed:  # the first submit's task, as it is now
        generation = await core.get(who, generation.id)
    return kling_task(generation, await core.image_urls(generation))


@router.post(GENERATIONS, openapi_extra=docs.json_body(GenerationBody, idempotent=True), responses=TASK_RESPONSES)
async def submit_generation(request: Request, core: Generations = core_dep) -> JSONResponse:
    async def work() -> dict:
        who = await get_caller(request)  # in the route: its refusal is Kling's envelope too
        body = await parse_json(request, GenerationBody)
        params, inputs = generation_params(body)
        return await _submit(who, core, params, inputs, submission_key(request, body))

    return await kling_answer(work())


@router.post(TRY_ON, openapi_extra=docs.json_body(TryOnBody, idempotent=True), responses=TASK_RESPONSES)
async def submit_try_on(request: Request, core: Generations = core_dep) -> JSONResponse:
    async def work() -> dict:
        who = await get_caller(request)
        body = await parse_json(request, TryOnBody)
        params, inputs = try_on_params(body)
        return await _submit(who, core, params, inputs, submission_key(request, body))

    return await kling_answer(work())


@router.get(GENERATIONS + "/{task_id}", responses=TASK_RESPONSES)
@router.get(TRY_ON + "/{task_id}", responses=TASK_RESPONSES)
async def get_task(task_id: str, request: Request, core: Generations = core_dep) -> JSONResponse:
    async def work() -> dict:
        who = await get_caller(request)
        try:
            generation = await core.get(who, task_id)
        except GatewayError as err:
            if err.code is ErrorCode.NOT_FOUND:
                raise GatewayError(
                    ErrorCode.NOT_FOUND, f"The task {task_id} does not exist.", param="task_id"
                ) from None
            raise
        return kling_task(generation, await core.image_urls(generation))

    return await kling_answer(work())
