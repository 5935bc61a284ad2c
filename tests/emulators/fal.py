"""fal.ai queue API emulator (docs/provider-contracts.md section 7), the queue.fal.run host.

- `Authorization: Key <key>` (401 `{"detail"}` otherwise).
- `POST /{owner}/{alias}[/{subpath}]` for the apps below; the input is checked against
  the app's schema (422 with a pydantic `detail` list); answers `{status: IN_QUEUE,
  request_id, response_url, status_url, cancel_url}` whose URLs carry only {owner}/{alias}:
  status, result and cancel under a sub-path are 404, as the contract warns.
- Status: IN_QUEUE (queue_position) -> IN_PROGRESS (tqdm-style logs) -> COMPLETED over
  `job_seconds`. The result: `{images, seed, prompt, has_nsfw_concepts, timings}`; a prompt
  with REFUSED_WORD completes with has_nsfw_concepts true (black images); with
  "upstream-error" the result is a 500 carrying x-fal-request-id; a kontext image_url that
  cannot be downloaded is a 422 on the result, as fal reports runtime input errors.
- `PUT .../cancel`: 202 CANCELLATION_REQUESTED while queued, else 400 ALREADY_COMPLETED.
- `GET /_emulator/fal/requests`: what was submitted.
"""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import dataclass

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

from tests.emulators.harness import REFUSED_WORD, EmulatorState, fake_image, install

SIZES = {"square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024), "portrait_16_9": (576, 1024),
         "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576)}
RATIOS = {"21:9": (1568, 672), "16:9": (1392, 752), "4:3": (1184, 880), "3:2": (1248, 832), "1:1": (1024, 1024),
          "2:3": (832, 1248), "3:4": (880, 1184), "9:16": (752, 1392), "9:21": (672, 1568)}
COMMON = {"prompt": "str", "seed": "int", "num_images": "num_images", "sync_mode": "bool"}
FLUX = {**COMMON, "image_size": "image_size", "output_format": "format", "enable_safety_checker": "bool",
        "num_inference_steps": "steps", "guidance_scale": "float", "acceleration": "acceleration"}
PRO = {**FLUX, "safety_tolerance": "tolerance"}
KONTEXT = {**COMMON, "aspect_ratio": "ratio", "output_format": "format", "safety_tolerance": "tolerance", "guidance_scale": "float"}
# app (owner/alias) -> sub-path -> input schema
APPS: dict[str, dict[str, dict]] = {
    "fal-ai/flux": {"dev": FLUX, "schnell": FLUX},
    "fal-ai/flux-pro": {"v1.1": PRO, "new": PRO, "kontext": {**KONTEXT, "image_url": "url"}, "kontext/text-to-image": KONTEXT},
    "fal-ai/fast-sdxl": {"": {**COMMON, "image_size": "image_size", "negative_prompt": "str", "format": "format",
                              "enable_safety_checker": "bool", "num_inference_steps": "steps", "guidance_scale": "float"}},
}
REQUIRED = {"kontext": ("prompt", "image_url")}


def _err(field: str, msg: str, kind: str) -> dict:
    return {"loc": ["body", field], "msg": msg, "type": kind}


def check(schema: dict, data: object, subpath: str) -> list[dict]:
    if not isinstance(data, dict):
        return [_err("", "Input should be a valid dictionary", "dict_type")]
    errors = [_err(f, "Field required", "missing") for f in REQUIRED.get(subpath, ("prompt",)) if f not in data]
    for name, value in data.items():
        kind = schema.get(name)
        if kind is None:
            errors.append(_err(name, "Extra inputs are not permitted", "extra_forbidden"))
        elif kind in ("str", "url") and not isinstance(value, str):
            errors.append(_err(name, "Input should be a valid string", "string_type"))
        elif kind == "url" and not value.startswith(("http://", "https://", "data:")):
            errors.append(_err(name, "Input should be a valid URL", "url_parsing"))
        elif kind == "bool" and not isinstance(value, bool):
            errors.append(_err(name, "Input should be a valid boolean", "bool_type"))
        elif kind in ("int", "steps", "num_images") and (isinstance(value, bool) or not isinstance(value, int)):
            errors.append(_err(name, "Input should be a valid integer", "int_type"))
        elif kind == "steps" and not 1 <= value <= 50 or kind == "num_images" and not 1 <= value <= 4:
            errors.append(_err(name, "Input should be between 1 and 4" if kind == "num_images" else "Input should be between 1 and 50", "less_than_equal"))
        elif kind == "float" and (isinstance(value, bool) or not isinstance(value, int | float)):
            errors.append(_err(name, "Input should be a valid number", "float_type"))
        elif kind == "format" and value not in ("jpeg", "png"):
            errors.append(_err(name, "Input should be 'jpeg' or 'png'", "literal_error"))
        elif kind == "tolerance" and value not in ("1", "2", "3", "4", "5", "6"):
            errors.append(_err(name, "Input should be '1', '2', '3', '4', '5' or '6'", "literal_error"))
        elif kind == "acceleration" and value not in ("none", "regular", "high"):
            errors.append(_err(name, "Input should be 'none', 'regular' or 'high'", "literal_error"))
        elif kind == "ratio" and value not in RATIOS:
            errors.append(_err(name, f"Input should be one of {', '.join(RATIOS)}", "literal_error"))
        elif kind == "image_size" and not (isinstance(value, str) and value in SIZES or isinstance(value, dict) and set(value) == {"width", "height"}
                                           and all(isinstance(v, int) and 1 <= v <= 14142 for v in value.values())):
            errors.append(_err(name, "Input should be a valid image size", "image_size"))
    return errors


@dataclass
class Queued:
    id: str
    app: str
    endpoint: str
    input: dict
    created: float
    seconds: float
    cancelled: bool = False
    result: dict | None = None
    failure: tuple[int, object] | None = None


def create_app(state: EmulatorState) -> FastAPI:
    app = FastAPI()
    requests: dict[str, Queued] = {}

    def authorized(request: Request) -> bool:
        return request.headers.get("authorization") == f"Key {state.api_key}"

    @app.middleware("http")
    async def auth(request: Request, call_next):
        path = request.url.path
        if path == "/_emulator/reset":
            requests.clear()
        if not path.startswith(("/_emulator", "/_files")) and not authorized(request):
            return JSONResponse({"detail": "Authentication is required to access this application."}, 401)
        return await call_next(request)

    # The control surface first: the catch-all /{owner}/{alias} routes below must not shadow it.
    install(app, state, authorized)

    def status_of(q: Queued) -> str:
        elapsed = time.monotonic() - q.created
        if q.cancelled or elapsed >= q.seconds:
            return "COMPLETED"
        return "IN_QUEUE" if elapsed < q.seconds * 0.3 else "IN_PROGRESS"

    def urls(q: Queued) -> dict:
        base = f"{state.base_url}/{q.app}/requests/{q.id}"
        return {"request_id": q.id, "response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    async def finish(q: Queued) -> None:
        """The model's run, computed once when the request completes."""
        if q.result is not None or q.failure is not None:
            return
        data = q.input
        if q.cancelled:
            q.failure = (400, {"detail": "Request was cancelled"})
            return
        if "upstream-error" in data.get("prompt", ""):
            q.failure = (500, {"detail": "Internal Server Error"})
            return
        size = RATIOS[data.get("aspect_ratio", "1:1")] if q.endpoint.startswith("kontext") else None
        if isinstance(data.get("image_url"), str) and data["image_url"].startswith("http"):
            try:
                async with httpx.AsyncClient(timeout=10) as client:
                    fetched = await client.get(data["image_url"])
                fetched.raise_for_status()
                Image.open(io.BytesIO(fetched.content)).load()
            except (httpx.HTTPError, OSError):
                q.failure = (422, {"detail": [_err("image_url", "Failed to download the file. Please check if the URL is accessible.", "file_download_error")]})
                return
        raw = data.get("image_size", "landscape_4_3")
        size = size or (SIZES[raw] if isinstance(raw, str) else (raw["width"], raw["height"]))
        fmt = data.get("output_format") or data.get("format") or "jpeg"
        nsfw = REFUSED_WORD in data.get("prompt", "")
        images = []
        for i in range(data.get("num_images", 1)):
            body = fake_image(*size, "black" if nsfw else f"{data.get('prompt')}|{data.get('seed')}|{i}", fmt.upper())
            images.append({"url": state.host_file(body, f"image/{fmt}", "jpg" if fmt == "jpeg" else fmt),
                           "width": size[0], "height": size[1], "content_type": f"image/{fmt}"})
        q.result = {"images": images, "seed": data.get("seed", 1), "prompt": data.get("prompt"),
                    "has_nsfw_concepts": [nsfw] * len(images), "timings": {"inference": q.seconds}}

    @app.post("/{owner}/{alias}")
    @app.post("/{owner}/{alias}/{subpath:path}")
    async def submit(owner: str, alias: str, request: Request, subpath: str = ""):
        name = f"{owner}/{alias}"
        schema = APPS.get(name, {}).get(subpath)
        if schema is None:
            return JSONResponse({"detail": f"Application '{name}/{subpath}' not found"}, 404)
        try:
            data = await request.json()
        except ValueError:
            data = None
        errors = check(schema, data, subpath)
        if errors:
            return JSONResponse({"detail": errors}, 422)
        q = Queued(str(uuid.uuid4()), name, subpath, data, time.monotonic(), state.faults.job_seconds)
        requests[q.id] = q
        return {"status": "IN_QUEUE", "queue_position": sum(1 for r in requests.values() if status_of(r) == "IN_QUEUE") - 1, **urls(q)}

    def find(owner: str, alias: str, request_id: str) -> Queued | None:
        q = requests.get(request_id)
        return q if q is not None and q.app == f"{owner}/{alias}" else None

    @app.get("/{owner}/{alias}/requests/{request_id}/status")
    async def status(owner: str, alias: str, request_id: str, logs: int = 0):
        q = find(owner, alias, request_id)
        if q is None:
            return JSONResponse({"detail": "Request not found"}, 404)
        state_ = status_of(q)
        body = {"status": state_, **urls(q)}
        if state_ == "IN_QUEUE":
            body["queue_position"] = 0
            return JSONResponse(body, 202)
        done = 100 if state_ == "COMPLETED" else int(100 * (time.monotonic() - q.created) / q.seconds)
        body["logs"] = [{"message": f"{done:3d}%|{'█' * (done // 10)}| {done * 28 // 100}/28", "level": "INFO", "source": "USER",
                         "timestamp": "2026-01-01T00:00:00Z"}] if logs else None
        if state_ == "COMPLETED":
            body["metrics"] = {"inference_time": q.seconds}
        return JSONResponse(body, 200 if state_ == "COMPLETED" else 202)

    @app.get("/{owner}/{alias}/requests/{request_id}")
    async def result(owner: str, alias: str, request_id: str):
        q = find(owner, alias, request_id)
        if q is None:
            return JSONResponse({"detail": "Request not found"}, 404)
        if status_of(q) != "COMPLETED":
            return JSONResponse({"detail": "Request is still in progress"}, 400)
        await finish(q)
        headers = {"x-fal-request-id": q.id}
        if q.failure is not None:
            return JSONResponse(q.failure[1], q.failure[0], headers=headers)
        return JSONResponse(q.result, 200, headers=headers)

    @app.put("/{owner}/{alias}/requests/{request_id}/cancel")
    async def cancel(owner: str, alias: str, request_id: str):
        q = find(owner, alias, request_id)
        if q is None:
            return JSONResponse({"detail": "Request not found"}, 404)
        if status_of(q) != "IN_QUEUE":
            return JSONResponse({"status": "ALREADY_COMPLETED"}, 400)
        q.cancelled = True
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, 202)

    @app.get("/_emulator/fal/requests")
    async def listing():
        def short(data: dict) -> dict:
            return {k: (f"<data url {len(v)} chars>" if isinstance(v, str) and v.startswith("data:") else v) for k, v in data.items()}

        return {"requests": [{"id": q.id, "app": q.app, "endpoint": q.endpoint, "input": short(q.input), "cancelled": q.cancelled}
                             for q in requests.values()]}

    return app
