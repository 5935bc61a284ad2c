"""Black Forest Labs API emulator (docs/provider-contracts.md section 2; FLUX.2, Kontext
[max] and 1.1 [pro] ultra from docs/provider-contracts-2.md section 10).

- `POST /v1/<model>` with `x-key`; bodies validated as BFL's FastAPI models do (422 with
  `{"detail": [{"loc", "msg", "type"}]}`); answers `{id, polling_url, cost, ...}`.
- The polling URL points at a region (`/eu/v1/get_result?id=...`) as the real one may;
  the global `/v1/get_result` does not know regional tasks ("Task not found"), so a
  client that rebuilds the URL instead of polling it exactly fails here too.
- Poll states: Pending (with progress) for `job_seconds`, then Ready with `result.sample`
  on an expiring-like file URL; a prompt with REFUSED_WORD is "Request Moderated", with
  "moderated-output" "Content Moderated", with "upstream-error" "Error", with
  "expire-task" the task is forgotten ("Task not found") once its time is up.
- FLUX.2 bodies are checked as Flux2Params (unknown fields rejected, sides >= 64 in
  multiples of 16, at most 4 MP, each model's reference limit, flex-only guidance/steps);
  `cost` follows BFL's megapixel formula; transparent_bg makes an image with alpha.
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
from PIL import Image, ImageChops

from tests.emulators.harness import REFUSED_WORD, EmulatorState, fake_image, install

PIXEL_MODELS = {"flux-pro-1.1", "flux-pro", "flux-dev"}
ASPECT_MODELS = {"flux-pro-1.1-ultra", "flux-kontext-pro", "flux-kontext-max"}
# FLUX.2 (contract part 2, section 10): endpoint -> most reference images.
FLUX2_MODELS = {"flux-2-pro": 8, "flux-2-max": 8, "flux-2-flex": 8, "flux-2-klein-4b": 4, "flux-2-klein-9b": 5}
FLUX2_FIELDS = {
    "prompt", "width", "height", "seed", "safety_tolerance", "output_format", "prompt_upsampling",
    "transparent_bg", "webhook_url", "webhook_secret", "guidance", "steps",
}  # fmt: skip
# Credits (1 = $0.01) of FLUX.2's first and each further megapixel (inputs at the further rate).
FLUX2_CREDITS = {
    "flux-2-pro": (3, 1.5), "flux-2-max": (7, 3), "flux-2-flex": (5, 5),
    "flux-2-klein-4b": (1.4, 0.1), "flux-2-klein-9b": (1.5, 0.2),
}  # fmt: skip
KONTEXT_INPUTS = 4
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


def input_names(model: str) -> list[str]:
    """The reference-image fields a model takes: input_image, input_image_2, ..."""
    count = FLUX2_MODELS.get(model, KONTEXT_INPUTS if model.startswith("flux-kontext") else 0)
    return ["input_image"] + [f"input_image_{i}" for i in range(2, count + 1)] if count else []


def _check_image(body: dict, name: str, errors: list) -> None:
    image = body.get(name)
    if image is None or (isinstance(image, str) and image.startswith(("http://", "https://"))):
        return
    if _decode_image(image) is None:
        errors.append(_error(name, f"{name} must be a base64 encoded image or an http(s) URL"))


def validate_flux2(model: str, body: dict) -> list[dict]:
    """Flux2Params: unknown fields rejected, sides at least 64 and multiples of 16, at most
    4 MP, flex-only guidance/steps, no prompt_upsampling on klein."""
    errors: list[dict] = []
    allowed = FLUX2_FIELDS | set(input_names(model))
    if not model.endswith("flex"):
        allowed -= {"guidance", "steps"}
    if "klein" in model:
        allowed -= {"prompt_upsampling"}
    errors += [_error(name, "Extra inputs are not permitted", "extra_forbidden") for name in sorted(set(body) - allowed)]
    if not isinstance(body.get("prompt"), str) or not body["prompt"]:
        errors.append(_error("prompt", "Field required", "missing"))
    _int_in(body, "seed", 0, 2**63 - 1, errors)
    _int_in(body, "safety_tolerance", 0, 5, errors)
    for side in ("width", "height"):
        _int_in(body, side, 64, 4_194_304 // 64, errors, multiple=16)
    if isinstance(body.get("width"), int) and isinstance(body.get("height"), int) and body["width"] * body["height"] > 4_194_304:
        errors.append(_error("width", "width x height must be at most 4194304 pixels"))
    if body.get("output_format", "jpeg") not in ("jpeg", "png", "webp"):
        errors.append(_error("output_format", "Input should be 'jpeg', 'png' or 'webp'", "enum"))
    if body.get("transparent_bg") and body.get("output_format", "jpeg") == "jpeg":
        errors.append(_error("transparent_bg", "transparent_bg needs output_format png or webp"))
    _int_in(body, "guidance", 1.5, 10, errors, number=True)
    _int_in(body, "steps", 1, 50, errors)
    for name in input_names(model):
        _check_image(body, name, errors)
    return errors


def validate(model: str, body: dict) -> list[dict]:
    errors = validate_flux2(model, body) if model in FLUX2_MODELS else validate_flux1(model, body)
    if has_inputs(model, body) and isinstance(body.get("safety_tolerance"), int) and body["safety_tolerance"] > 2:
        errors.append(_error("safety_tolerance", "safety_tolerance must be at most 2 with an input image"))
    return errors


def validate_flux1(model: str, body: dict) -> list[dict]:
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
        for name in input_names(model):
            _check_image(body, name, errors)
        extra = {k for k in body if k.startswith("input_image")} - set(input_names(model))
        errors += [_error(name, "Extra inputs are not permitted", "extra_forbidden") for name in sorted(extra)]
    if model == "flux-pro-1.1-ultra":
        if not body.get("prompt") and not body.get("image_prompt"):
            errors.append(_error("prompt", "prompt or image_prompt is required", "missing"))
        if body.get("image_prompt") is not None and _decode_image(body["image_prompt"]) is None:
            errors.append(_error("image_prompt", "image_prompt must be a base64 encoded image"))
        _int_in(body, "image_prompt_strength", 0, 1, errors, number=True)
        if "raw" in body and not isinstance(body["raw"], bool):
            errors.append(_error("raw", "Input should be a valid boolean", "bool_type"))
    return errors


def has_inputs(model: str, body: dict) -> bool:
    return any(body.get(name) for name in input_names(model)) or bool(body.get("image_prompt"))


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
    if model in FLUX2_MODELS:  # the model's choice without a size: the first reference's, or 1 MP
        if body.get("width") and body.get("height"):
            return body["width"], body["height"]
        return input_size or (1024, 1024)
    ratio = _ratio(body.get("aspect_ratio")) or (input_size[0] / input_size[1] if input_size else 16 / 9 if "ultra" in model else 1.0)
    megapixels = 4_000_000 if "ultra" in model else 1_048_576
    width = round(math.sqrt(megapixels * ratio) / 32) * 32
    return width, round(width / ratio / 32) * 32


def _transparent(png: bytes, fmt: str) -> bytes:
    """The image with its corners (outside the disc) made fully transparent."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    background = Image.new("RGB", image.size, image.getpixel((0, 0)))
    image.putalpha(ImageChops.difference(image, background).convert("L").point(lambda v: 255 if v else 0))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


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
        if model not in PIXEL_MODELS | ASPECT_MODELS | set(FLUX2_MODELS):
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
        task = Task(uuid.uuid4().hex, model, body, now, state.faults.job_seconds, (0, 0))
        input_sizes: list[tuple[int, int]] = []
        for name in [*input_names(model), "image_prompt"]:
            image = body.get(name)
            if isinstance(image, str) and image.startswith(("http://", "https://")):
                try:
                    async with httpx.AsyncClient(timeout=10) as client:
                        fetched = await client.get(image)
                    fetched.raise_for_status()
                    input_sizes.append(Image.open(io.BytesIO(fetched.content)).size)
                except (httpx.HTTPError, OSError):
                    task.outcome, task.details = "Error", {"error": f"{name} could not be downloaded"}
            elif image:
                decoded = _decode_image(image)
                if decoded:
                    input_sizes.append(decoded.size)
        input_size = input_sizes[0] if input_sizes and model != "flux-pro-1.1-ultra" else None
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
        input_mp = sum(w * h for w, h in input_sizes) / 2**20
        output_mp = width * height / 2**20
        if model in FLUX2_MODELS:
            first, further = FLUX2_CREDITS[model]
            cost = first + max(0.0, output_mp - 1) * further + input_mp * further
        else:
            cost = 4.0
        return {
            "id": task.id,
            "polling_url": f"{state.base_url}/{REGION}/v1/get_result?id={task.id}",
            "cost": round(cost, 2),
            "input_mp": round(input_mp, 2),
            "output_mp": round(output_mp, 2),
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
            seed = f"{task.body.get('prompt')}|{task.body.get('seed')}"
            if task.body.get("transparent_bg"):
                data = _transparent(fake_image(*task.size, seed), fmt.upper())
            else:
                data = fake_image(*task.size, seed, "JPEG" if fmt == "jpeg" else fmt.upper())
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
            return {
                name: f"<base64 {len(value)} chars>"
                if (name.startswith("input_image") or name == "image_prompt") and isinstance(value, str) and not value.startswith("http")
                else value
                for name, value in body.items()
            }

        return {"tasks": [{"id": t.id, "model": t.model, "body": short(t.body)} for t in tasks.values()]}

    return install(app, state, authorized)
