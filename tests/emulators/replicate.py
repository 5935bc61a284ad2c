"""Replicate predictions API emulator (docs/provider-contracts.md section 6), served under /v1.

- `Authorization: Bearer <token>`; RFC 7807 problem bodies for 401/404/422.
- `POST /v1/models/{owner}/{name}/predictions` for the official models below,
  `POST /v1/predictions` {version, input} for community ones (SDXL); `input` checked
  against each model's schema (unknown inputs, ranges, enums: 422 "Input validation failed").
- `Prefer: wait[=N]` holds the create until the prediction ends or N s (at most 60) pass.
- Predictions: starting -> processing (tqdm-style logs with "NN%") -> succeeded over
  `job_seconds`; `output` is one URL or a list, per model. REFUSED_WORD in the prompt:
  failed with an NSFW error; "upstream-error": failed.
- `GET /v1/predictions/{id}`, `POST /v1/predictions/{id}/cancel` (canceled unless done).
- `GET /_emulator/replicate/predictions`: what was created (headers, inputs shortened).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.emulators.harness import REFUSED_WORD, EmulatorState, fake_image, install

FLUX_RATIOS = {"1:1", "16:9", "21:9", "3:2", "2:3", "4:5", "5:4", "3:4", "4:3", "9:16", "9:21"}
RATIO_SIZES = {"1:1": (1024, 1024), "16:9": (1344, 768), "21:9": (1536, 640), "3:2": (1216, 832), "2:3": (832, 1216),
               "4:5": (896, 1088), "5:4": (1088, 896), "3:4": (896, 1184), "4:3": (1184, 896), "9:16": (768, 1344),
               "9:21": (640, 1536), "2:1": (1408, 704), "1:2": (704, 1408)}
SDXL_VERSION = "7762fd07cf82c948538e41f63f77d685e02b063e37e496e96eefd46c929f9bdc"


def _spec(**fields) -> dict:
    return {"prompt": ("str", None), "seed": ("int", (0, 2**32 - 1)), **fields}


FORMATS3 = ("enum", ("webp", "jpg", "png"))
# name -> (input schema: field -> (type, constraint), output is a list?)
SCHEMAS: dict[str, tuple[dict, bool]] = {
    "black-forest-labs/flux-1.1-pro": (_spec(
        aspect_ratio=("enum", ("custom", *sorted(FLUX_RATIOS))), width=("int32", (256, 1440)), height=("int32", (256, 1440)),
        output_format=FORMATS3, output_quality=("int", (0, 100)), safety_tolerance=("int", (1, 6)),
        prompt_upsampling=("bool", None), image_prompt=("uri", None)), False),
    "black-forest-labs/flux-pro": (_spec(
        aspect_ratio=("enum", ("custom", *sorted(FLUX_RATIOS))), width=("int32", (256, 1440)), height=("int32", (256, 1440)),
        steps=("int", (1, 50)), guidance=("num", (2, 5)), interval=("num", (1, 4)), output_format=FORMATS3,
        output_quality=("int", (0, 100)), safety_tolerance=("int", (1, 6)), prompt_upsampling=("bool", None)), False),
    "black-forest-labs/flux-dev": (_spec(
        aspect_ratio=("enum", tuple(sorted(FLUX_RATIOS))), num_outputs=("int", (1, 4)), num_inference_steps=("int", (1, 50)),
        guidance=("num", (0, 10)), output_format=FORMATS3, output_quality=("int", (0, 100)), go_fast=("bool", None),
        disable_safety_checker=("bool", None), megapixels=("enum", ("1", "0.25")), image=("uri", None)), True),
    "black-forest-labs/flux-kontext-pro": (_spec(
        input_image=("uri", None), aspect_ratio=("enum", ("match_input_image", *sorted(RATIO_SIZES))),
        output_format=("enum", ("jpg", "png")), safety_tolerance=("int", (0, 6)), prompt_upsampling=("bool", None)), False),
    "stability-ai/sdxl": (_spec(
        negative_prompt=("str", None), width=("int", (128, 2048)), height=("int", (128, 2048)), num_outputs=("int", (1, 4)),
        num_inference_steps=("int", (1, 500)), guidance_scale=("num", (1, 50)), image=("uri", None)), True),
}
VERSIONS = {SDXL_VERSION: "stability-ai/sdxl"}


def problem(status: int, title: str, detail: str) -> JSONResponse:
    return JSONResponse({"type": "https://replicate.com/docs/errors", "title": title, "status": status, "detail": detail},
                        status, media_type="application/problem+json")


def check(schema: dict, data: object) -> list[str]:
    if not isinstance(data, dict):
        return ["- input: Invalid type. Expected: object"]
    errors = []
    for name, value in data.items():
        if name not in schema:
            errors.append(f"- input: Additional property {name} is not allowed")
            continue
        kind, rule = schema[name]
        if kind == "str" and not isinstance(value, str) or kind == "bool" and not isinstance(value, bool):
            errors.append(f"- input.{name}: Invalid type. Expected: {'string' if kind == 'str' else 'boolean'}")
        elif kind in ("int", "int32", "num"):
            if isinstance(value, bool) or not isinstance(value, int | float) or kind != "num" and not isinstance(value, int):
                errors.append(f"- input.{name}: Invalid type. Expected: {'number' if kind == 'num' else 'integer'}")
            elif not rule[0] <= value <= rule[1]:
                errors.append(f"- input.{name}: Must be between {rule[0]} and {rule[1]}")
            elif kind == "int32" and value % 32:
                errors.append(f"- input.{name}: Must be a multiple of 32")
        elif kind == "enum" and value not in rule:
            errors.append(f"- input.{name}: {name} must be one of the following: {', '.join(map(repr, rule))}")
        elif kind == "uri" and not (isinstance(value, str) and value.startswith(("http://", "https://", "data:"))):
            errors.append(f"- input.{name}: Does not match format 'uri'")
    if not isinstance(data.get("prompt"), str) or not data.get("prompt"):
        errors.append("- input: prompt is required")
    return errors


@dataclass
class Prediction:
    id: str
    model: str
    version: str
    input: dict
    created: float
    seconds: float
    many: bool
    prefer: str
    canceled: bool = False
    output: object = None
    error: str = ""


def create_app(state: EmulatorState) -> FastAPI:
    app = FastAPI()
    predictions: dict[str, Prediction] = {}

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Bearer {state.api_key}"

    @app.middleware("http")
    async def auth(request: Request, call_next):
        if request.url.path == "/_emulator/reset":
            predictions.clear()
        if request.url.path.startswith("/v1/") and not authorized(request):
            return problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        return await call_next(request)

    def status_of(p: Prediction) -> str:
        elapsed = time.monotonic() - p.created
        if p.canceled:
            return "canceled"
        if elapsed < p.seconds * 0.2:
            return "starting"
        if elapsed < p.seconds:
            return "processing"
        return "failed" if p.error else "succeeded"

    def view(p: Prediction) -> dict:
        status = status_of(p)
        elapsed = time.monotonic() - p.created
        logs = ""
        if status in ("processing", "succeeded"):
            done = 100 if status == "succeeded" else int(100 * elapsed / p.seconds)
            logs = f"Using seed: {p.input.get('seed')}\n{done:3d}%|{'█' * (done // 10)}| {done * 28 // 100}/28"
        if status == "succeeded" and p.output is None:
            fmt = p.input.get("output_format", "png" if p.model == "stability-ai/sdxl" else "webp")
            pil = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt]
            ratio = p.input.get("aspect_ratio")
            if ratio in RATIO_SIZES:
                size = RATIO_SIZES[ratio]
            elif ratio == "match_input_image" or (ratio is None and "input_image" in p.input):
                size = (1024, 1024)
            else:
                size = (p.input.get("width", 1024), p.input.get("height", 1024))
            urls = [state.host_file(fake_image(*size, f"{p.input.get('prompt')}|{p.input.get('seed')}|{i}", pil),
                                    f"image/{'jpeg' if fmt == 'jpg' else fmt}", fmt)
                    for i in range(p.input.get("num_outputs", 1))]
            p.output = urls if p.many else urls[0]
        base = f"{state.base_url}/v1/predictions/{p.id}"
        return {
            "id": p.id, "model": p.model, "version": p.version or "hidden", "input": p.input,
            "output": p.output if status == "succeeded" else None, "logs": logs,
            "error": p.error if status == "failed" else None, "status": status,
            "created_at": "2026-01-01T00:00:00.000000Z", "data_removed": False,
            "metrics": {"predict_time": p.seconds} if status == "succeeded" else {},
            "urls": {"get": base, "cancel": f"{base}/cancel", "web": f"https://replicate.com/p/{p.id}"},
        }

    async def create(request: Request, model: str, version: str, data: object):
        schema, many = SCHEMAS[model]
        errors = check(schema, data)
        if errors:
            return problem(422, "Input validation failed", "\n".join(errors))
        prefer = request.headers.get("prefer", "")
        p = Prediction(secrets.token_hex(13), model, version, data, time.monotonic(), state.faults.job_seconds, many, prefer)
        prompt = data.get("prompt", "")
        if REFUSED_WORD in prompt:
            p.error = "NSFW content detected. Try running it again, or try a different prompt."
        elif "upstream-error" in prompt:
            p.error = "CUDA error: out of memory"
        predictions[p.id] = p
        if prefer.startswith("wait"):
            _, _, value = prefer.partition("=")
            wait = min(60.0, float(value)) if value.strip().isdigit() else 60.0
            deadline = time.monotonic() + wait
            while status_of(p) not in ("succeeded", "failed", "canceled") and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
        return JSONResponse(view(p), 201)

    @app.post("/v1/models/{owner}/{name}/predictions")
    async def create_official(owner: str, name: str, request: Request):
        model = f"{owner}/{name}"
        if model not in SCHEMAS or model in VERSIONS.values():
            return problem(404, "Not found", "The requested resource could not be found.")
        body = await _json(request)
        if not isinstance(body, dict) or "input" not in body:
            return problem(422, "Input validation failed", "- (root): input is required")
        return await create(request, model, "", body["input"])

    @app.post("/v1/predictions")
    async def create_versioned(request: Request):
        body = await _json(request)
        if not isinstance(body, dict) or "input" not in body or "version" not in body:
            return problem(422, "Input validation failed", "- (root): version is required; input is required")
        model = VERSIONS.get(str(body["version"]).split(":")[-1])
        if model is None:
            return problem(422, "Invalid version", "The specified version does not exist (or perhaps you don't have permission to use it?)")
        return await create(request, model, body["version"], body["input"])

    @app.get("/v1/predictions/{prediction_id}")
    async def get(prediction_id: str):
        p = predictions.get(prediction_id)
        return view(p) if p else problem(404, "Not found", "The requested resource could not be found.")

    @app.post("/v1/predictions/{prediction_id}/cancel")
    async def cancel(prediction_id: str):
        p = predictions.get(prediction_id)
        if p is None:
            return problem(404, "Not found", "The requested resource could not be found.")
        if status_of(p) in ("starting", "processing"):
            p.canceled = True
        return view(p)

    @app.get("/_emulator/replicate/predictions")
    async def listing():
        def short(data: dict) -> dict:
            return {k: (f"<data url {len(v)} chars>" if isinstance(v, str) and v.startswith("data:") else v) for k, v in data.items()}

        return {"predictions": [{"id": p.id, "model": p.model, "version": p.version, "input": short(p.input), "prefer": p.prefer,
                                 "canceled": p.canceled} for p in predictions.values()]}

    return install(app, state, authorized)


async def _json(request: Request) -> object:
    try:
        return await request.json()
    except ValueError:
        return None
