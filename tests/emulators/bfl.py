"""Black Forest Labs API emulator (docs/provider-contracts.md section 2).

- `POST /v1/<model>` with `x-key`; bodies validated as BFL's FastAPI models do (422 with
  `{"detail": [{"loc", "msg", "type"}]}`); answers `{id, polling_url, cost, ...}`.
- The polling URL points at a region (`/eu/v1/get_result?id=...`) as the real one may;
  the global `/v1/get_result` does not know regional tasks ("Task not found"), so a
  client that rebuilds the URL instead of polling it exactly fails here too.
- Poll states: Pending (with progress) for `job_seconds`, then Ready with `result.sample`
  on an expiring-like file URL; a prompt with REFUSED_WORD is "Request Moderated", with
  "moderated-output" "Content Moderated", with "upstream-error" "Error", with
  "expire-task" the task is forgotten ("Task not found") once its time is up.
- More than BFL_EMULATOR_MAX_ACTIVE (default 24, the contract's limit) unfinished tasks
  per key: 429.
- `GET /_emulator/bfl/tasks`: the tasks received (bodies, input images shortened);
  `/_emulator/reset` forgets them.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import time
import uuid
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

from tests.emulators.harness import REFUSED_WORD, EmulatorState, fake_image, install

PIXEL_MODELS = {"flux-pro-1.1", "flux-pro", "flux-dev"}
ASPECT_MODELS = {"flux-pro-1.1-ultra", "flux-kontext-pro", "flux-kontext-max"}
REGION = "eu"


@dataclass
class Task:
    id: str
    model: str
    body: dict
    created: float
    seconds: float
    size: tuple[int, int]
    outcome: str = "Ready"
    details: dict = field(default_factory=dict)
    sample: str = ""


def _error(loc: str, msg: str, kind: str = "value_error") -> dict:
    return {"loc": ["body", loc], "msg": msg, "type": kind}


def _int_in(body: dict, name: str, lo: float, hi: float, errors: list, *, multiple: int = 0, number: bool = False) -> None:
    if name not in body or body[name] is None:
        return
    value = body[name]
    ok_type = isinstance(value, int | float) if number else isinstance(value, int)
    if isinstance(value, bool) or not ok_type:
        errors.append(_error(name, "Input should be a valid number" if number else "Input should be a valid integer", "int_type"))
    elif not lo <= value <= hi:
        errors.append(_error(name, f"Input should be between {lo} and {hi}", "less_than_equal"))
    elif multiple and value % multiple:
        errors.append(_error(name, f"Input should be a multiple of {multiple}", "multiple_of"))


def _ratio(text: object) -> float | None:
    if not isinstance(text, str) or ":" not in text:
        return None
    w, _, h = text.partition(":")
    try:
        value = int(w) / int(h)
    except (ValueError, ZeroDivisionError):
        return None
    return value if 9 / 21 - 1e-9 <= value <= 21 / 9 + 1e-9 else None


def validate(model: str, body: dict) -> list[dict]:
    errors: list[dict] = []
    prompt = body.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        errors.append(_error("prompt", "Input should be a valid string", "string_type"))
    if model.startswith("flux-kontext") and not prompt:
        errors.append(_error("prompt", "Field required", "missing"))
    _int_in(body, "seed", 0, 2**63 - 1, errors)
    _int_in(body, "safety_tolerance", 0, 6, errors)
    formats = ("jpeg", "png", "webp") if model == "flux-pro-1.1-ultra" else ("jpeg", "png")
    if body.get("output_format", "jpeg") not in formats:
        errors.append(_error("output_format", f"Input should be {' or '.join(map(repr, formats))}", "enum"))
    if model in PIXEL_MODELS:
        for side in ("width", "height"):
            _int_in(body, side, 256, 1440, errors, multiple=32)
    else:
        if "aspect_ratio" in body and _ratio(body["aspect_ratio"]) is None:
            errors.append(_error("aspect_ratio", "Aspect ratio must be between 21:9 and 9:21"))
    if model in ("flux-dev", "flux-pro"):
        _int_in(body, "steps", 1, 50, errors)
        _int_in(body, "guidance", 1.5, 5, errors, number=True)
    if model == "flux-pro":
        _int_in(body, "interval", 1, 4, errors, number=True)
    if model.startswith("flux-kontext"):
        image = body.get("input_image")
        if image is not None and not (isinstance(image, str) and image.startswith(("http://", "https://"))):
            if _decode_image(image) is None:
                errors.append(_error("input_image", "input_image must be a base64 encoded image or an http(s) URL"))
        if image and body.get("safety_tolerance", 2) > 2:
            errors.append(_error("safety_tolerance", "safety_tolerance must be at most 2 with an input image"))
    return errors


def _decode_image(data: object) -> Image.Image | None:
    if not isinstance(data, str):
        return None
    if data.startswith("data:"):
        data = data.partition(",")[2]
    try:
        image = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
        image.load()
        return image
    except (binascii.Error, ValueError, OSError):
        return None


def _size(model: str, body: dict, input_size: tuple[int, int] | None) -> tuple[int, int]:
    if model in PIXEL_MODELS:
        return body.get("width") or 1024, body.get("height") or 768
    ratio = _ratio(body.get("aspect_ratio")) or (input_size[0] / input_size[1] if input_size else 16 / 9 if "ultra" in model else 1.0)
    megapixels = 4_000_000 if "ultra" in model else 1_048_576
    width = round(math.sqrt(megapixels * ratio) / 32) * 32
    return width, round(width / ratio / 32) * 32


def create_app(state: EmulatorState) -> FastAPI:
    app = FastAPI()
    tasks: dict[str, Task] = {}
    max_active = int(os.environ.get("BFL_EMULATOR_MAX_ACTIVE", "24"))

    def authorized(request: Request) -> bool:
        return request.headers.get("x-key") == state.api_key

    @app.middleware("http")
    async def forget_on_reset(request: Request, call_next):
        if request.url.path == "/_emulator/reset":
            tasks.clear()
        return await call_next(request)

    @app.post("/v1/{model}")
    async def submit(model: str, request: Request):
        if not authorized(request):
            return JSONResponse({"detail": "Invalid or missing API key"}, 401)
        if model not in PIXEL_MODELS | ASPECT_MODELS:
            return JSONResponse({"detail": "Not Found"}, 404)
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"detail": [_error("", "JSON decode error", "json_invalid")]}, 422)
        if not isinstance(body, dict):
            return JSONResponse({"detail": [_error("", "Input should be a valid dictionary", "dict_type")]}, 422)
        errors = validate(model, body)
        if errors:
            return JSONResponse({"detail": errors}, 422)
        now = time.monotonic()
        active = sum(1 for t in tasks.values() if now - t.created < t.seconds)
        if max_active and active >= max_active:
            return JSONResponse(
                {"error": "rate_limit_exceeded", "message": f"You have {active} active tasks; the limit is {max_active}.", "retry_after": 1},
                429,
            )
        input_size = None
        task = Task(uuid.uuid4().hex, model, body, now, state.faults.job_seconds, (0, 0))
        image = body.get("input_image")
        if isinstance(image, str) and image.startswith(("http://", "https://")):
            try:
                async with httpx.AsyncClient(timeout=10) as client:
                    fetched = await client.get(image)
                fetched.raise_for_status()
                probe = Image.open(io.BytesIO(fetched.content))
                input_size = probe.size
            except (httpx.HTTPError, OSError):
                task.outcome, task.details = "Error", {"error": "input_image could not be downloaded"}
        elif image:
            decoded = _decode_image(image)
            input_size = decoded.size if decoded else None
        prompt = body.get("prompt") or ""
        if REFUSED_WORD in prompt:
            task.outcome, task.details = "Request Moderated", {"Moderation Reasons": ["Content Policy"]}
        elif "moderated-output" in prompt:
            task.outcome, task.details = "Content Moderated", {"Moderation Reasons": ["NSFW"]}
        elif "upstream-error" in prompt:
            task.outcome, task.details = "Error", {"error": "Generation failed: internal error"}
        elif "expire-task" in prompt:
            task.outcome = "Task not found"  # forgotten upstream once its time is up
        task.size = _size(model, body, input_size)
        tasks[task.id] = task
        width, height = task.size
        return {
            "id": task.id,
            "polling_url": f"{state.base_url}/{REGION}/v1/get_result?id={task.id}",
            "cost": 4.0,
            "input_mp": 0.0,
            "output_mp": round(width * height / 1e6, 2),
        }

    def result(task_id: str) -> dict:
        task = tasks.get(task_id)
        if task is None:
            return {"id": task_id, "status": "Task not found", "result": None, "progress": None, "details": None, "preview": None}
        elapsed = time.monotonic() - task.created
        if task.outcome == "Request Moderated":  # refused on the way in: no waiting
            return {"id": task.id, "status": task.outcome, "result": None, "progress": None, "details": task.details, "preview": None}
        if elapsed < task.seconds:
            return {"id": task.id, "status": "Pending", "result": None, "progress": round(elapsed / task.seconds, 3), "details": None, "preview": None}
        if task.outcome == "Task not found":
            return {"id": task.id, "status": task.outcome, "result": None, "progress": None, "details": None, "preview": None}
        if task.outcome != "Ready":
            return {"id": task.id, "status": task.outcome, "result": None, "progress": None, "details": task.details, "preview": None}
        if not task.sample:
            fmt = task.body.get("output_format", "jpeg")
            data = fake_image(*task.size, f"{task.body.get('prompt')}|{task.body.get('seed')}", "JPEG" if fmt == "jpeg" else fmt.upper())
            task.sample = state.host_file(data, f"image/{fmt}", "jpg" if fmt == "jpeg" else fmt)
        return {
            "id": task.id,
            "status": "Ready",
            "result": {"sample": task.sample, "prompt": task.body.get("prompt"), "seed": task.body.get("seed")},
            "progress": None,
            "details": None,
            "preview": None,
        }

    @app.get("/{region}/v1/get_result")
    async def regional_result(region: str, id: str, request: Request):  # noqa: A002 - BFL's query name
        if not authorized(request):
            return JSONResponse({"detail": "Invalid or missing API key"}, 401)
        if region != REGION:
            return JSONResponse({"detail": "Not Found"}, 404)
        return result(id)

    @app.get("/v1/get_result")
    async def global_result(id: str, request: Request):  # noqa: A002
        if not authorized(request):
            return JSONResponse({"detail": "Invalid or missing API key"}, 401)
        # Tasks live in the region that took them; only their polling_url finds them.
        return {"id": id, "status": "Task not found", "result": None, "progress": None, "details": None, "preview": None}

    @app.get("/_emulator/bfl/tasks")
    async def list_tasks():
        def short(body: dict) -> dict:
            image = body.get("input_image")
            if isinstance(image, str) and not image.startswith("http"):
                body = {**body, "input_image": f"<base64 {len(image)} chars>"}
            return body

        return {"tasks": [{"id": t.id, "model": t.model, "body": short(t.body)} for t in tasks.values()]}

    return install(app, state, authorized)
