"""Midjourney proxy requests (novicezk / trueai midjourney-proxy) as generation params.

Pure functions, no I/O: request bodies, their translation to GenerationParams, the
proxies' result codes, data URIs. The task shape (generation -> task JSON) is in
presenters.mj, because webhooks (notifyHook) send it too.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field

from edge.inputs import Upload, decode_base64_image
from edge.schemas import checked_callback_url
from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode, GatewayError, invalid

# The proxies' ReturnCode.
SUCCESS = 1
NOT_FOUND = 3
VALIDATION_ERROR = 4
FAILURE = 9
EXISTED = 21
IN_QUEUE = 22
QUEUE_REJECTED = 23
BANNED_PROMPT = 24

CODES: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: VALIDATION_ERROR,
    ErrorCode.MODEL_NOT_FOUND: VALIDATION_ERROR,
    ErrorCode.INSUFFICIENT_BALANCE: VALIDATION_ERROR,
    ErrorCode.CONFLICT: VALIDATION_ERROR,
    ErrorCode.CONTENT_POLICY_VIOLATION: BANNED_PROMPT,
    ErrorCode.RATE_LIMITED: QUEUE_REJECTED,
    ErrorCode.NOT_FOUND: NOT_FOUND,
}
# botType -> catalog model.
BOT_MODELS = {"MID_JOURNEY": "midjourney", "NIJI_JOURNEY": "niji"}
# Blend `dimensions` -> aspect ratio.
DIMENSIONS = {"PORTRAIT": "2:3", "SQUARE": "1:1", "LANDSCAPE": "3:2"}
CHANGE_ACTIONS = ("UPSCALE", "VARIATION", "REROLL")
MAX_INPUT_BYTES = 10 * 1024 * 1024
_SIMPLE_CHANGE = re.compile(r"^\s*(?P<id>\S+)\s+(?P<op>[UV][1-4]|R)\s*$", re.I)


def code_of(err: GatewayError) -> int:
    return CODES.get(err.code, FAILURE)


def submit_result(code: int, description: str, result: str | None = None, **properties: object) -> dict:
    """The proxies' SubmitResultVO."""
    return {"code": code, "description": description, "result": result, "properties": properties}


def failure_result(err: GatewayError) -> dict:
    props: dict[str, object] = {}
    if err.param:
        props["param"] = err.param
    return submit_result(code_of(err), err.message, None, **props)


class _Body(BaseModel):
    """Fields every submit takes; unknown fields (accountFilter, mode, ...) are ignored,
    as the proxies do."""

    model_config = ConfigDict(extra="ignore")

    notifyHook: str | None = None
    state: str | None = None
    botType: str | None = None


class ImagineBody(_Body):
    prompt: str | None = None
    base64Array: list[str] | None = None
    base64: str | None = None  # older single-image field


class ChangeBody(_Body):
    taskId: str | None = None
    action: str | None = None
    index: int | None = None


class SimpleChangeBody(_Body):
    content: str | None = None


class ActionBody(_Body):
    taskId: str | None = None
    customId: str | None = None
    enableRemix: bool | None = None


class BlendBody(_Body):
    base64Array: list[str] | None = None
    dimensions: str | None = None


class DescribeBody(_Body):
    base64: str | None = None
    link: str | None = None


class TaskConditionBody(BaseModel):
    model_config = ConfigDict(extra="ignore")
    ids: list[str] = Field(default_factory=list)


def decode_image(value: str, param: str) -> Upload:
    """A data URI (or bare base64) of a png, webp or jpeg image, read and checked."""
    return decode_base64_image(value, param=param, max_bytes=MAX_INPUT_BYTES)


def model_of(bot_type: str | None) -> str:
    key = (bot_type or "MID_JOURNEY").upper()
    if key not in BOT_MODELS:
        raise invalid(f"botType must be one of {', '.join(BOT_MODELS)}.", "botType")
    return BOT_MODELS[key]


def _base(body: _Body, model: str, kind: gen.GenerationKind.ValueType) -> gen.GenerationParams:
    params = gen.GenerationParams(model=model, kind=kind, n=1, client_state=body.state or "")
    if body.notifyHook:
        params.callback_url = checked_callback_url(body.notifyHook, "notifyHook")
        params.webhook_format = "mj"
    return params


def imagine_params(body: ImagineBody) -> tuple[gen.GenerationParams, list[str]]:
    """Params and the images to store first (the prompt's image references)."""
    if not body.prompt or not body.prompt.strip():
        raise invalid("prompt must not be empty.", "prompt")
    params = _base(body, model_of(body.botType), gen.GENERATION_KIND_GENERATE)
    params.prompt = body.prompt.strip()
    return params, list(body.base64Array or ([body.base64] if body.base64 else []))


def blend_params(body: BlendBody) -> tuple[gen.GenerationParams, list[str]]:
    images = body.base64Array or []
    if not 2 <= len(images) <= 5:
        raise invalid("base64Array must hold 2 to 5 images.", "base64Array")
    dimensions = (body.dimensions or "SQUARE").upper()
    if dimensions not in DIMENSIONS:
        raise invalid(f"dimensions must be one of {', '.join(DIMENSIONS)}.", "dimensions")
    params = _base(body, model_of(body.botType), gen.GENERATION_KIND_BLEND)
    params.size = DIMENSIONS[dimensions]
    return params, list(images)


def describe_params(body: DescribeBody) -> tuple[gen.GenerationParams, list[str]]:
    if not body.base64 and not body.link:
        raise invalid("base64 must not be empty.", "base64")
    params = _base(body, model_of(body.botType), gen.GENERATION_KIND_DESCRIBE)
    if body.base64:
        return params, [body.base64]
    params.image_url = checked_callback_url(body.link or "", "link")
    return params, []


def parse_simple_change(body: SimpleChangeBody) -> ChangeBody:
    m = _SIMPLE_CHANGE.match(body.content or "")
    if m is None:
        raise invalid("content must look like '<taskId> U1..U4 | V1..V4 | R'.", "content")
    op = m["op"].upper()
    action = {"U": "UPSCALE", "V": "VARIATION", "R": "REROLL"}[op[0]]
    return ChangeBody(
        taskId=m["id"],
        action=action,
        index=int(op[1:]) if len(op) > 1 else None,
        notifyHook=body.notifyHook,
        state=body.state,
    )


def check_parent(parent: gen.Generation) -> None:
    """Buttons can be pressed only on a finished task (the proxies' VALIDATION_ERROR)."""
    if parent.state != gen.GENERATION_STATE_SUCCEEDED:
        raise invalid(f"The task {parent.id} has not succeeded; its buttons cannot be used.", "taskId")


def _action_params(body: _Body, parent: gen.Generation, action: str) -> gen.GenerationParams:
    params = _base(body, parent.model, gen.GENERATION_KIND_ACTION)
    params.prompt = parent.params.prompt
    params.parent_generation_id = parent.id
    params.action = action
    params.size = parent.params.size
    return params


def change_params(body: ChangeBody, parent: gen.Generation) -> gen.GenerationParams:
    """U1-U4 / V1-V4 / reroll: the parent's matching button's custom id, else the short name."""
    action = (body.action or "").upper()
    if action not in CHANGE_ACTIONS:
        raise invalid(f"action must be one of {', '.join(CHANGE_ACTIONS)}.", "action")
    if action != "REROLL" and (body.index is None or not 1 <= body.index <= 4):
        raise invalid("index must be 1 to 4 for UPSCALE and VARIATION.", "index")
    check_parent(parent)
    short = "reroll" if action == "REROLL" else f"{action[0]}{body.index}"
    verb = {"UPSCALE": "upsample", "VARIATION": "variation", "REROLL": "reroll"}[action]
    for button in parent.buttons:
        parts = button.custom_id.split("::")
        if len(parts) >= 4 and parts[2] == verb and (action == "REROLL" or parts[3] == str(body.index)):
            return _action_params(body, parent, button.custom_id)
    return _action_params(body, parent, short)


def action_params(body: ActionBody, parent: gen.Generation) -> gen.GenerationParams:
    custom_id = (body.customId or "").strip()
    if not custom_id:
        raise invalid("customId must not be empty.", "customId")
    check_parent(parent)
    if parent.buttons and custom_id not in {b.custom_id for b in parent.buttons}:
        raise invalid(f"The task {parent.id} has no button {custom_id!r}.", "customId")
    return _action_params(body, parent, custom_id)
