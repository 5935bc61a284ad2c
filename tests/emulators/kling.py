"""Kling AI image API emulator (docs/provider-contracts-2.md section 8).

- Auth: `Authorization: Bearer <JWT>`, HS256 over `{iss, exp, nbf}` signed with the secret
  key. The emulator's api_key is "<access key>:<secret key>". 401 with code 1001 (no
  header), 1002 (not a valid token or signature), 1000 (unknown access key), 1003 (`nbf`
  in the future), 1004 (expired).
- `POST /v1/images/generations` and `POST /v1/images/kolors-virtual-try-on` check the body
  against the contract (1201 naming the field, 1203 unknown model) and answer the envelope
  `{code: 0, message, request_id, data: {task_id, task_status: submitted, task_info,
  created_at, updated_at}}` (milliseconds). `GET .../{task_id}` (task_id or
  external_task_id; 1203 unknown) and `GET ...?pageNum=&pageSize=` read tasks: submitted ->
  processing -> succeed over `job_seconds`, with `task_result.images[{index, url}]` and
  `final_unit_deduction` a string.
- Moderation: a prompt with REFUSED_WORD is refused at submit (400, code 1301); with
  "unsafe-output" the task ends `failed` with a risk-control `task_status_msg`; with
  "upstream-error" it fails with an internal error.
- Capacity: a task holds `n` units (try-on: 1) until it ends; beyond `max_units` a submit is
  429 code 1303. `POST /_emulator/kling/options {"max_units", "billing", "clock_offset"}`:
  `billing` answers every submit 429 code 1102 (resource pack used up); `clock_offset`
  moves the emulator's clock (seconds) to test token expiry.
- `GET /_emulator/kling/tasks`: what was submitted (images shortened).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import io
import json
import time
import uuid
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from PIL import Image

from tests.emulators.harness import REFUSED_WORD, EmulatorState, fake_image, install

GENERATION_MODELS = ("kling-v1", "kling-v1-5", "kling-v2", "kling-v2-new", "kling-v2-1")
TRY_ON_MODELS = ("kolors-virtual-try-on-v1", "kolors-virtual-try-on-v1-5")
RATIOS = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (1024, 1024), "4:3": (1152, 864), "3:4": (864, 1152),
          "3:2": (1248, 832), "2:3": (832, 1248), "21:9": (1512, 648)}
GENERATION_FIELDS = {"model_name", "model", "prompt", "negative_prompt", "image", "image_reference", "image_fidelity",
                     "human_fidelity", "element_list", "resolution", "n", "aspect_ratio", "watermark_info",
                     "callback_url", "external_task_id"}
TRY_ON_FIELDS = {"model_name", "human_image", "cloth_image", "callback_url", "external_task_id"}


@dataclass
class Options:
    max_units: int = 50
    billing: bool = False
    clock_offset: float = 0.0


@dataclass
class KlingTask:
    id: str
    kind: str  # "generations" | "kolors-virtual-try-on"
    body: dict
    created: float
    seconds: float
    units: int
    size: tuple[int, int]
    external_task_id: str = ""
    images: list[dict] = field(default_factory=list)


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def create_app(state: EmulatorState) -> FastAPI:
    app = FastAPI()
    access_key, _, secret_key = state.api_key.partition(":")
    tasks: dict[str, KlingTask] = {}
    options = Options()

    def now() -> float:
        return time.time() + options.clock_offset

    def envelope(data: object = None, code: int = 0, message: str = "SUCCEED", status: int = 200) -> JSONResponse:
        body: dict = {"code": code, "message": message, "request_id": str(uuid.uuid4())}
        if code == 0:
            body["data"] = data
        return JSONResponse(body, status_code=status)

    def auth_failure(request: Request) -> tuple[int, str] | None:
        """(code, message) of a request whose token Kling would refuse, None when it is good."""
        header = request.headers.get("authorization", "")
        if not header:
            return 1001, "Authorization is empty"
        if not header.startswith("Bearer "):
            return 1002, "Authorization is invalid"
        parts = header[len("Bearer "):].split(".")
        if len(parts) != 3:
            return 1002, "Authorization is invalid"
        try:
            head = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (ValueError, binascii.Error):
            return 1002, "Authorization is invalid"
        if head.get("alg") != "HS256" or claims.get("iss") != access_key:
            return 1000, "Authentication failed"
        expected = hmac.new(secret_key.encode(), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(signature, expected):
            return 1002, "Authorization is invalid"
        t = now()
        if not isinstance(claims.get("nbf"), int) or claims["nbf"] > t:
            return 1003, "Authorization is not active"
        if not isinstance(claims.get("exp"), int) or claims["exp"] <= t:
            return 1004, "Authorization has expired"
        return None

    @app.middleware("http")
    async def auth(request: Request, call_next):
        path = request.url.path
        if path == "/_emulator/reset":
            tasks.clear()
            options.__init__()  # type: ignore[misc]
        if not path.startswith(("/_emulator", "/_files")):
            refused = auth_failure(request)
            if refused is not None:
                return envelope(code=refused[0], message=refused[1], status=401)
        return await call_next(request)

    install(app, state, lambda request: auth_failure(request) is None)

    def status_of(task: KlingTask) -> str:
        elapsed = time.monotonic() - task.created
        if elapsed >= task.seconds:
            prompt = task.body.get("prompt") or ""
            return "failed" if "unsafe-output" in prompt or "upstream-error" in prompt else "succeed"
        return "submitted" if elapsed < task.seconds * 0.3 else "processing"

    def held_units() -> int:
        return sum(t.units for t in tasks.values() if status_of(t) in ("submitted", "processing"))

    def task_json(task: KlingTask) -> dict:
        status = status_of(task)
        created_ms = int((time.time() - (time.monotonic() - task.created)) * 1000)
        data: dict = {"task_id": task.id, "task_status": status, "task_status_msg": "",
                      "task_info": {"external_task_id": task.external_task_id},
                      "created_at": created_ms, "updated_at": int(time.time() * 1000)}
        prompt = task.body.get("prompt") or ""
        if status == "failed":
            data["task_status_msg"] = ("Failure to pass the risk control system" if "unsafe-output" in prompt
                                       else "Internal error, please try again later")
        if status == "succeed":
            if not task.images:
                seed = f"{prompt}|{task.body.get('human_image', '')[:40]}|{task.id}"
                for i in range(task.units if task.kind == "generations" else 1):
                    url = state.host_file(fake_image(*task.size, f"{seed}|{i}"))
                    task.images.append({"index": i, "url": url, "watermark_url": ""})
            data["task_result"] = {"images": task.images}
            data["watermark_info"] = {"enabled": False}
            data["final_unit_deduction"] = str(task.units)
        return data

    async def read_input(value: object, name: str) -> tuple[int, int] | str:
        """(width, height) of an input image, or why Kling refuses it."""
        if not isinstance(value, str) or not value:
            return f"{name} is invalid"
        if value.startswith("data:"):
            return f"{name} must be base64 without the data: prefix"
        if value.startswith(("http://", "https://")):
            try:
                async with httpx.AsyncClient(timeout=10) as client:
                    fetched = await client.get(value)
                fetched.raise_for_status()
            except httpx.HTTPError:
                return f"{name} could not be downloaded"
            data = fetched.content
        else:
            try:
                data = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                return f"{name} is not valid base64"
        if len(data) > 10 * 1024 * 1024:
            return f"{name} must not exceed 10MB"
        try:
            with Image.open(io.BytesIO(data)) as image:
                fmt, size = image.format, image.size
        except OSError:
            return f"{name} is not an image"
        if fmt not in ("PNG", "JPEG"):
            return f"{name} format must be jpg/jpeg/png"
        if min(size) < 300:
            return f"{name} width and height must be at least 300px"
        return size

    def over_capacity(units: int) -> JSONResponse | None:
        if options.billing:
            return envelope(code=1102, message="resource pack exhausted", status=429)
        if held_units() + units > options.max_units:
            return envelope(code=1303, message="parallel task over resource pack limit", status=429)
        return None

    async def body_of(request: Request) -> dict | JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            return envelope(code=1200, message="request body is not valid JSON", status=400)
        if not isinstance(body, dict):
            return envelope(code=1200, message="request body must be an object", status=400)
        return body

    def bad(message: str, code: int = 1201, status: int = 400) -> JSONResponse:
        return envelope(code=code, message=message, status=status)

    def duplicate_external(body: dict) -> bool:
        ext = body.get("external_task_id") or ""
        return bool(ext) and any(t.external_task_id == ext for t in tasks.values())

    @app.post("/v1/images/generations")
    async def create_generation(request: Request):
        body = await body_of(request)
        if isinstance(body, JSONResponse):
            return body
        unknown = sorted(set(body) - GENERATION_FIELDS)
        if unknown:
            return bad(f"unknown parameter: {unknown[0]}")
        model = body.get("model_name") or ("kling-v1" if body.get("model") else "kling-v1")
        if model not in GENERATION_MODELS:
            return bad(f"model_name {model} is not supported", 1203, 404)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return bad("prompt is required")
        if len(prompt) > 2500 or len(body.get("negative_prompt") or "") > 2500:
            return bad("prompt cannot exceed 2500 characters")
        if REFUSED_WORD in prompt:
            return bad("prompt violates the content security policy", 1301)
        n = body.get("n", 1)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 9:
            return bad("n must be between 1 and 9")
        ratio = body.get("aspect_ratio", "16:9")
        if ratio not in RATIOS or model == "kling-v1" and ratio == "21:9":
            return bad(f"aspect_ratio {ratio} is not supported by {model}")
        resolution = body.get("resolution", "1k")
        if resolution not in ("1k", "2k"):
            return bad("resolution must be 1k or 2k")
        if resolution == "2k" and (model != "kling-v2" or body.get("image") is not None):
            return bad("resolution 2k is supported by kling-v2 text-to-image only")
        made = tuple(2 * side for side in RATIOS[ratio]) if resolution == "2k" else RATIOS[ratio]
        image = body.get("image")
        reference = body.get("image_reference")
        if image is None:
            if model == "kling-v2-new":
                return bad("image is required for kling-v2-new")
            for name in ("image_reference", "image_fidelity", "human_fidelity"):
                if name in body:
                    return bad(f"{name} needs image")
        else:
            size = await read_input(image, "image")
            if isinstance(size, str):
                return bad(size)
            if model == "kling-v2-new":
                made = size  # a restyle keeps the input's resolution
            if not 1 / 2.5 <= size[0] / size[1] <= 2.5:
                return bad("image aspect ratio must be between 1:2.5 and 2.5:1")
            if body.get("negative_prompt"):
                return bad("negative_prompt is not supported when image is set")
            if reference is not None and reference not in ("subject", "face"):
                return bad("image_reference must be subject or face")
            if model == "kling-v1-5" and reference is None:
                return bad("image_reference is required for kling-v1-5 when image is set")
            for name in ("image_fidelity", "human_fidelity"):
                value = body.get(name)
                if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1):
                    return bad(f"{name} must be between 0 and 1")
            if "image_fidelity" in body and model not in ("kling-v1", "kling-v1-5"):
                return bad(f"image_fidelity is not supported by {model}")
            if "human_fidelity" in body and (model != "kling-v1-5" or reference != "subject"):
                return bad("human_fidelity needs kling-v1-5 and image_reference subject")
        if duplicate_external(body):
            return bad("external_task_id already exists")
        refused = over_capacity(n)
        if refused is not None:
            return refused
        task = KlingTask(str(uuid.uuid4().int)[:18], "generations", body, time.monotonic(), state.faults.job_seconds,
                         n, made, body.get("external_task_id") or "")
        tasks[task.id] = task
        return envelope(task_json(task) | {"task_status": "submitted"})

    @app.post("/v1/images/kolors-virtual-try-on")
    async def create_try_on(request: Request):
        body = await body_of(request)
        if isinstance(body, JSONResponse):
            return body
        unknown = sorted(set(body) - TRY_ON_FIELDS)
        if unknown:
            return bad(f"unknown parameter: {unknown[0]}")
        model = body.get("model_name") or "kolors-virtual-try-on-v1"
        if model not in TRY_ON_MODELS:
            return bad(f"model_name {model} is not supported", 1203, 404)
        sizes = {}
        for name in ("human_image", "cloth_image"):
            if name not in body:
                return bad(f"{name} is required")
            size = await read_input(body[name], name)
            if isinstance(size, str):
                return bad(size)
            sizes[name] = size
        if duplicate_external(body):
            return bad("external_task_id already exists")
        refused = over_capacity(1)
        if refused is not None:
            return refused
        task = KlingTask(str(uuid.uuid4().int)[:18], "kolors-virtual-try-on", body, time.monotonic(),
                         state.faults.job_seconds, 1, sizes["human_image"], body.get("external_task_id") or "")
        tasks[task.id] = task
        return envelope(task_json(task) | {"task_status": "submitted"})

    def find(kind: str, task_id: str) -> KlingTask | None:
        task = tasks.get(task_id) or next((t for t in tasks.values() if t.external_task_id == task_id), None)
        return task if task is not None and task.kind == kind else None

    @app.get("/v1/images/{kind}/{task_id}")
    async def query(kind: str, task_id: str):
        task = find(kind, task_id)
        if task is None:
            return bad(f"task {task_id} does not exist", 1203, 404)
        return envelope(task_json(task))

    @app.get("/v1/images/{kind}")
    async def listing(kind: str, pageNum: int = 1, pageSize: int = 30):  # noqa: N803 (Kling's names)
        if not 1 <= pageNum <= 1000 or not 1 <= pageSize <= 500:
            return bad("pageNum must be 1-1000 and pageSize 1-500")
        found = [t for t in tasks.values() if t.kind == kind]
        return envelope([task_json(t) for t in found[(pageNum - 1) * pageSize:pageNum * pageSize]])

    @app.post("/_emulator/kling/options")
    async def set_options(request: Request) -> dict:
        for key, value in (await request.json()).items():
            setattr(options, key, value)
        return {"ok": True}

    @app.get("/_emulator/kling/tasks")
    async def submitted() -> dict:
        def short(body: dict) -> dict:
            return {k: (f"<image {len(v)} chars>" if k in ("image", "human_image", "cloth_image") and isinstance(v, str)
                        and not v.startswith("http") else v) for k, v in body.items()}

        return {"tasks": [{"id": t.id, "kind": t.kind, "body": short(t.body), "status": status_of(t)} for t in tasks.values()]}

    return app
