"""AUTOMATIC1111 / Forge `sdapi` emulator (docs/provider-contracts-2.md §13b), on :7860 with --api.

- Auth only when the emulator's key is `user:pass` (`--api-auth`): HTTP Basic, else 401
  `{"detail": "Incorrect username or password"}`.
- `POST /sdapi/v1/txt2img` / `img2img`: synchronous, one job at a time behind a lock, each
  running `job_seconds` in 10 sampling steps (interruptible: an interrupted job answers with
  what it has, as A1111 does). Body fields are type-checked (FastAPI 422 `{"detail": [...]}`);
  an unknown `sampler_name` is 404 `{"error": "HTTPException", "detail": "Sampler not found",
  "body", "errors"}`; an `init_images` entry that is not an image is 500 "Invalid encoded
  image"; a prompt with "upstream-error" is 500 OutOfMemoryError. The answer is
  `{images: [b64], parameters, info: "<JSON string>"}`; a batch of more than one image
  comes after its grid (`index_of_first_image` 1).
- `GET /sdapi/v1/progress` (the running job's `progress`, `eta_relative`, `state`,
  `current_image`, `textinfo`), `POST /sdapi/v1/interrupt` (empty 200),
  `GET /sdapi/v1/sd-models`. No moderation.
- `GET /_emulator/sdapi/jobs`: every job's body (images shortened), task id, whether it was
  interrupted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

from tests.emulators.harness import EmulatorState, fake_image, install

SAMPLERS = ["Euler", "Euler a", "DPM++ 2M", "DPM++ 2M SDE", "DDIM"]
CHECKPOINTS = [
    {"title": "sd_xl_base_1.0.safetensors [31e35c80fc]", "model_name": "sd_xl_base_1.0", "hash": "31e35c80fc",
     "sha256": "31e35c80fc4829d14f90153f4c74cd59c90b779f6afe05a74cd6120b893f7e5b",
     "filename": "/models/Stable-diffusion/sd_xl_base_1.0.safetensors", "config": None},
]
TYPES = {"prompt": str, "negative_prompt": str, "seed": int, "width": int, "height": int, "batch_size": int,
         "n_iter": int, "steps": int, "cfg_scale": (int, float), "sampler_name": str, "send_images": bool,
         "save_images": bool, "force_task_id": str, "override_settings": dict, "init_images": list, "mask": str,
         "denoising_strength": (int, float)}


@dataclass
class Job:
    task_id: str
    path: str
    body: dict
    started: float = 0.0
    step: int = 0
    steps: int = 10
    interrupted: bool = False


def _exception(status: int, error: str, detail: str = "", errors: str = "") -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail, "body": "", "errors": errors}, status)


def create_app(state: EmulatorState) -> FastAPI:
    app = FastAPI()
    jobs: list[Job] = []
    runtime: dict = {"lock": None, "running": None}

    def authorized(request: Request) -> bool:
        if ":" not in state.api_key:
            return True
        return request.headers.get("authorization") == "Basic " + base64.b64encode(state.api_key.encode()).decode()

    @app.middleware("http")
    async def auth(request: Request, call_next):
        if request.url.path == "/_emulator/reset":
            if runtime["running"] is not None:
                runtime["running"].interrupted = True
            jobs.clear()
        if request.url.path.startswith("/sdapi") and not authorized(request):
            return JSONResponse({"detail": "Incorrect username or password"}, 401, headers={"WWW-Authenticate": "Basic"})
        return await call_next(request)

    install(app, state, authorized)

    def check(body: object) -> list[dict]:
        if not isinstance(body, dict):
            return [{"loc": ["body"], "msg": "Input should be a valid dictionary", "type": "dict_type"}]
        return [{"loc": ["body", k], "msg": f"Input should be a valid {t.__name__ if isinstance(t, type) else 'number'}",
                 "type": "type_error"}
                for k, t in TYPES.items() if k in body and (not isinstance(body[k], t) or isinstance(body[k], bool)
                                                             and t is not bool)]

    def decode(data: str) -> Image.Image | None:
        try:
            raw = base64.b64decode(data.partition(",")[2] if data.startswith("data:") else data, validate=True)
            image = Image.open(io.BytesIO(raw))
            image.load()
            return image
        except (binascii.Error, ValueError, OSError):
            return None

    async def generate(request: Request, path: str):
        body = await request.json() if request.headers.get("content-type", "").startswith("application/json") else None
        if errors := check(body):
            return JSONResponse({"detail": errors}, 422)
        if body.get("sampler_name", "Euler") not in SAMPLERS:
            return _exception(404, "HTTPException", "Sampler not found")
        width, height = body.get("width", 512), body.get("height", 512)
        if path == "img2img":
            sources = [decode(i) for i in body.get("init_images") or []]
            if not sources or any(s is None for s in sources):
                return _exception(500, "HTTPException", "Invalid encoded image")
            if "width" not in body:
                width, height = sources[0].size
        job = Job(body.get("force_task_id") or f"task({len(jobs)})", path, body)
        jobs.append(job)
        if runtime["lock"] is None:
            runtime["lock"] = asyncio.Lock()
        async with runtime["lock"]:
            job.started = time.monotonic()
            runtime["running"] = job
            try:
                for step in range(1, job.steps + 1):
                    until = time.monotonic() + state.faults.job_seconds / job.steps
                    while not job.interrupted and time.monotonic() < until:
                        await asyncio.sleep(min(0.05, max(0.0, until - time.monotonic())))
                    if job.interrupted:
                        break
                    job.step = step
            finally:
                runtime["running"] = None
        if "upstream-error" in body.get("prompt", ""):
            return _exception(500, "OutOfMemoryError", "", "CUDA out of memory. Tried to allocate 1.50 GiB")
        n = body.get("batch_size", 1) * body.get("n_iter", 1)
        seed = body.get("seed", -1)
        images = [fake_image(width, height, f"{body.get('prompt')}|{body.get('negative_prompt')}|{seed}|{i}")
                  for i in range(n)]
        first = 0
        if n > 1:  # return_grid: the grid comes first
            images.insert(0, fake_image(width, height, "grid"))
            first = 1
        info = {"prompt": body.get("prompt", ""), "all_prompts": [body.get("prompt", "")] * n, "seed": seed,
                "all_seeds": [seed + i for i in range(n)], "width": width, "height": height,
                "sd_model_name": CHECKPOINTS[0]["model_name"], "index_of_first_image": first,
                "job_timestamp": time.strftime("%Y%m%d%H%M%S")}
        return {"images": [base64.b64encode(i).decode() for i in images], "parameters": body,
                "info": json.dumps(info)}

    @app.post("/sdapi/v1/txt2img")
    async def txt2img(request: Request):
        return await generate(request, "txt2img")

    @app.post("/sdapi/v1/img2img")
    async def img2img(request: Request):
        return await generate(request, "img2img")

    @app.get("/sdapi/v1/progress")
    async def progress(skip_current_image: bool = False):
        job = runtime["running"]
        if job is None:
            return {"progress": 0.0, "eta_relative": 0.0, "current_image": None, "textinfo": None,
                    "state": {"skipped": False, "interrupted": False, "job": "", "job_count": 0,
                              "job_timestamp": "0", "job_no": 0, "sampling_step": 0, "sampling_steps": 0}}
        done = job.step / job.steps
        return {"progress": done, "eta_relative": state.faults.job_seconds * (1 - done), "current_image": None,
                "textinfo": None,
                "state": {"skipped": False, "interrupted": job.interrupted, "job": job.task_id, "job_count": 1,
                          "job_timestamp": "20260101000000", "job_no": 0, "sampling_step": job.step,
                          "sampling_steps": job.steps}}

    @app.post("/sdapi/v1/interrupt")
    async def interrupt():
        if runtime["running"] is not None:
            runtime["running"].interrupted = True
        return None

    @app.get("/sdapi/v1/sd-models")
    async def sd_models():
        return CHECKPOINTS

    @app.get("/_emulator/sdapi/jobs")
    async def listing():
        def short(body: dict) -> dict:
            return {k: ([f"<{len(x)} b64 chars>" for x in v] if k == "init_images" else
                        f"<{len(v)} b64 chars>" if k == "mask" else v) for k, v in body.items()}
        return {"jobs": [{"task_id": j.task_id, "path": j.path, "body": short(j.body), "interrupted": j.interrupted}
                         for j in jobs]}

    return app
