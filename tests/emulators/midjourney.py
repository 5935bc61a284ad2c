"""Midjourney proxy emulator, in either flavour (docs/provider-contracts.md section 5).

`create_app(state, flavor=, max_queue=)`; as a process the flavour comes from
MJ_EMULATOR_FLAVOR (novicezk | trueai, default novicezk) and the queue size from
MJ_EMULATOR_MAX_QUEUE (unfinished tasks before code 23; 0 = unlimited).

- novicezk: header `mj-api-secret` (401, empty body, when wrong); `/mj/submit/{imagine,
  change,simple-change,blend,describe}`; `GET /mj/task/{id}/fetch` (empty 200 for an
  unknown id); no buttons, no cancel, no `/action`; a prompt with REFUSED_WORD is code 24.
- trueai: `Authorization` or `Mj-Api-Secret` (403 "未登录" when wrong); the same routes under
  "", /mj-fast, /mj-turbo, /mj-relax, without `/change` (removed in v10) but with
  `/mj/submit/action` {taskId, customId} (customId must be one of the parent's buttons;
  unknown parent: HTTP 404 code 3), `POST /mj/task/{id}/cancel` (the task fails with
  "取消任务"), `buttons[]` on tasks; unknown fetch id: 204; REFUSED_WORD fails the task
  ("Banned prompt detected", the Discord-side refusal) since trueai's submit check is off.
- V7 (contract part 2, section 12): --oref/--ow/--draft/--exp without `--v 7` fail the
  task, as does an --oref URL that cannot be downloaded; trueai serves
  `/mj/submit/upload-discord-images` (MJ_EMULATOR_UPLOADS=false: code 4, the admin setting
  off) and gives upscaled V7 images "Upscale (Subtle)" / "Upscale (Creative)" buttons
  (`upsample_v7_2x_*`), which double the image.
- Tasks go SUBMITTED -> IN_PROGRESS ("NN%", a preview imageUrl) -> SUCCESS over
  `job_seconds`; "upstream-error" in a prompt ends in FAILURE. Grids are one image.
- `GET /_emulator/midjourney/tasks`: what was submitted (bodies with base64 shortened).
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import random
import re
import time
import uuid
from dataclasses import dataclass, field

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from PIL import Image

from tests.emulators.harness import REFUSED_WORD, EmulatorState, fake_image, install

MODES = ("", "/mj-fast", "/mj-turbo", "/mj-relax")
DESCRIBED = "1️⃣ {s} in soft light --ar 1:1\n\n2️⃣ {s}, watercolor --ar 1:1\n\n3️⃣ a photo of {s} --ar 1:1\n\n4️⃣ {s}, ink drawing --ar 1:1"
_AR = re.compile(r"--(?:ar|aspect)\s+(\d+):(\d+)")
_V7 = re.compile(r"--(?:v|version)\s+7\b")
_OREF = re.compile(r"--oref\s+(\S+)")
# Parameters only V7 takes (Midjourney refuses them on other versions).
_V7_ONLY = re.compile(r"--(?:oref|ow|draft|exp)\b")


@dataclass
class Task:
    id: str
    action: str
    path: str
    mode: str
    body: dict
    prompt: str
    created: float
    seconds: float
    size: tuple[int, int] = (512, 512)
    fail_reason: str = ""
    parent: str = ""
    index: int = 0
    description: str = ""
    hash: str = field(default_factory=lambda: uuid.uuid4().hex[:32])
    image_url: str = ""
    final_prompt: str = ""
    cancelled: bool = False


def _data_url_image(value: object) -> Image.Image | None:
    if not isinstance(value, str) or not value.startswith("data:") or ";base64," not in value:
        return None
    try:
        image = Image.open(io.BytesIO(base64.b64decode(value.partition(",")[2], validate=True)))
        image.load()
        return image
    except (binascii.Error, ValueError, OSError):
        return None


def _grid_size(prompt: str, base: int = 512) -> tuple[int, int]:
    m = _AR.search(prompt)
    w, h = (int(m.group(1)), int(m.group(2))) if m else (1, 1)
    return (base, max(64, base * h // w)) if w >= h else (max(64, base * w // h), base)


def create_app(
    state: EmulatorState, flavor: str | None = None, max_queue: int | None = None, uploads: bool | None = None
) -> FastAPI:
    flavor = flavor or os.environ.get("MJ_EMULATOR_FLAVOR", "novicezk")
    if max_queue is None:
        max_queue = int(os.environ.get("MJ_EMULATOR_MAX_QUEUE", "0"))
    if uploads is None:  # trueai's admin setting EnableUserCustomUploadBase64
        uploads = os.environ.get("MJ_EMULATOR_UPLOADS", "true") == "true"
    trueai = flavor == "trueai"
    app = FastAPI()
    tasks: dict[str, Task] = {}
    uploaded: list[str] = []
    preview = state.host_file(fake_image(64, 64, "preview"), "image/png", "png")

    def authorized(request: Request) -> bool:
        if trueai:
            return (request.headers.get("authorization") or request.headers.get("mj-api-secret")) == state.api_key
        return request.headers.get("mj-api-secret") == state.api_key

    @app.middleware("http")
    async def auth(request: Request, call_next):
        path = request.url.path
        if path == "/_emulator/reset":
            tasks.clear()
            uploaded.clear()
        if not path.startswith(("/_emulator", "/_files")) and not authorized(request):
            return PlainTextResponse("未登录", 403) if trueai else Response(status_code=401)
        return await call_next(request)

    def vo(code: int, description: str, result: str | None = None, **properties) -> dict:
        return {"code": code, "description": description, "result": result, "properties": properties}

    def new_task(action: str, request: Request, mode: str, body: dict, prompt: str = "", **extra) -> Task | dict:
        now = time.monotonic()
        if max_queue and sum(1 for t in tasks.values() if now - t.created < t.seconds) >= max_queue:
            return vo(23, "队列已满，请稍后尝试", numberOfQueues=max_queue)
        task_id = f"{int(time.time() * 1000)}{random.randint(100, 999)}"
        while task_id in tasks:
            task_id = f"{int(time.time() * 1000)}{random.randint(100, 999)}"
        task = Task(task_id, action, request.url.path, mode, body, prompt, now, state.faults.job_seconds, **extra)
        if "upstream-error" in prompt:
            task.fail_reason = "Internal error: the Discord interaction failed"
        elif trueai and REFUSED_WORD in prompt:
            task.fail_reason = "Banned prompt detected"
        tasks[task_id] = task
        return task

    def accepted(task: Task | dict) -> dict:
        return task if isinstance(task, dict) else vo(1, "提交成功", task.id, discordInstanceId="1118138338562560102")

    async def body_of(request: Request) -> dict | None:
        try:
            body = await request.json()
        except ValueError:
            return None
        return body if isinstance(body, dict) else None

    async def imagine(request: Request, mode: str = ""):
        body = await body_of(request)
        if body is None or not str(body.get("prompt") or "").strip():
            return vo(4, "prompt不能为空")
        prompt = body["prompt"].strip()
        if not trueai and REFUSED_WORD in prompt:
            return vo(24, "可能包含敏感词", promptEn=prompt, bannedWord=REFUSED_WORD)
        images = body.get("base64Array") or []
        if not isinstance(images, list) or any(_data_url_image(i) is None for i in images):
            return vo(4, "base64格式错误")
        if trueai and body.get("botType", "MID_JOURNEY") not in ("MID_JOURNEY", "NIJI_JOURNEY"):
            return vo(4, "botType参数错误")
        task = new_task("IMAGINE", request, mode, body, prompt, size=_grid_size(prompt), description=f"/imagine {prompt}")
        if isinstance(task, Task) and not task.fail_reason:
            task.fail_reason = await discord_check(prompt)
        return accepted(task)

    async def discord_check(prompt: str) -> str:
        """What Midjourney itself refuses (on Discord, after the submit): V7-only parameters
        on another version, an --oref it cannot download."""
        if _V7_ONLY.search(prompt) and not _V7.search(prompt):
            return "Invalid parameter: --oref, --ow, --draft and --exp need --v 7"
        if m := _OREF.search(prompt):
            try:
                async with httpx.AsyncClient(timeout=10) as client:
                    fetched = await client.get(m.group(1))
                fetched.raise_for_status()
                Image.open(io.BytesIO(fetched.content)).verify()
            except (httpx.HTTPError, OSError, SyntaxError):
                return f"Invalid image prompt link: could not download {m.group(1)[:80]}"
        return ""

    async def upload_discord_images(request: Request, mode: str = ""):
        if not uploads:
            return vo(4, "未开启上传功能")
        images = (await body_of(request) or {}).get("base64Array")
        if not isinstance(images, list) or not images:
            return vo(4, "base64Array不能为空")
        decoded = [_data_url_image(i) for i in images]
        if any(d is None for d in decoded):
            return vo(4, "base64格式错误")
        urls = []
        for image in decoded:
            out = io.BytesIO()
            image.convert("RGB").save(out, "PNG")
            urls.append(state.host_file(out.getvalue()))
        uploaded.extend(urls)
        return vo(1, "success", urls)

    async def blend(request: Request, mode: str = ""):
        body = await body_of(request)
        images = (body or {}).get("base64Array")
        if not isinstance(images, list) or not 2 <= len(images) <= 5:
            return vo(4, "base64List参数错误")
        dims = {"PORTRAIT": (342, 512), "SQUARE": (512, 512), "LANDSCAPE": (512, 342)}
        if body.get("dimensions", None if not trueai else "SQUARE") not in dims:
            return vo(4, "dimensions参数错误")
        if any(_data_url_image(i) is None for i in images):
            return vo(4, "base64格式错误")
        size = dims[body.get("dimensions", "SQUARE")]
        return accepted(new_task("BLEND", request, mode, body, size=size, description=f"/blend {len(images)}"))

    async def describe(request: Request, mode: str = ""):
        body = await body_of(request) or {}
        image = _data_url_image(body.get("base64"))
        link = body.get("link") if trueai else None
        if image is None and not (isinstance(link, str) and link.startswith(("http://", "https://"))):
            return vo(4, "base64不能为空" if not body.get("base64") else "base64格式错误")
        subject = "a red square" if image is not None and image.convert("RGB").getpixel((0, 0)) == (200, 30, 30) else "an abstract shape"
        task = new_task("DESCRIBE", request, mode, body, description="/describe")
        if isinstance(task, Task):
            task.final_prompt = DESCRIBED.format(s=subject)
            if image is not None:
                out = io.BytesIO()
                image.convert("RGB").save(out, "PNG")
                task.image_url = state.host_file(out.getvalue())
            else:
                task.image_url = link
        return accepted(task)

    def derived(parent: Task, action: str, index: int, request: Request, mode: str, body: dict) -> Task | dict:
        if action == "UPSCALE":  # a quarter of a grid; a 2x upscale of an upscaled image doubles it
            twice = parent.action == "UPSCALE"
            size = (parent.size[0] * 2, parent.size[1] * 2) if twice else (parent.size[0] // 2, parent.size[1] // 2)
        else:
            size = parent.size
        return new_task(action, request, mode, body, parent.prompt, size=size, parent=parent.id, index=index,
                        description=f"/up {parent.id} {'R' if action == 'REROLL' else action[0] + str(index)}")

    def ready(parent: Task | None) -> dict | None:
        if parent is None:
            return vo(3, "关联任务不存在或已失效")
        if status_of(parent)[0] != "SUCCESS":
            return vo(4, "关联任务状态错误")
        return None

    async def change(request: Request):
        body = await body_of(request) or {}
        if not body.get("taskId"):
            return vo(4, "taskId不能为空")
        action, index = body.get("action"), body.get("index")
        if action not in ("UPSCALE", "VARIATION", "REROLL"):
            return vo(4, "action参数错误")
        if action != "REROLL" and (not isinstance(index, int) or not 1 <= index <= 4):
            return vo(4, "index参数错误")
        parent = tasks.get(str(body["taskId"]))
        if (refused := ready(parent)) is not None:
            return refused
        if parent.action not in ("IMAGINE", "VARIATION", "REROLL", "BLEND"):
            return vo(4, "关联任务不允许执行变化")
        description = f"/up {parent.id} {'R' if action == 'REROLL' else action[0] + str(index)}"
        for existing in tasks.values():
            if existing.description == description and action == "UPSCALE":
                return vo(21, "任务已存在", existing.id, status=status_of(existing)[0], imageUrl=existing.image_url or None)
        return accepted(derived(parent, action, index or 0, request, "", body))

    async def action(request: Request, mode: str = ""):
        body = await body_of(request) or {}
        if not body.get("taskId") or not body.get("customId"):
            return vo(4, "参数错误")
        parent = tasks.get(str(body["taskId"]))
        if parent is None:
            return JSONResponse(vo(3, "关联任务不存在或已失效"), 404)
        if (refused := ready(parent)) is not None:
            return refused
        custom_id = body["customId"]
        if custom_id not in [b["customId"] for b in buttons(parent)]:
            return vo(4, "customId不存在")
        kind = custom_id.split("::")[2]
        act = "UPSCALE" if kind.startswith("upsample") else "REROLL" if kind == "reroll" else "VARIATION"
        return accepted(derived(parent, act, int(custom_id.split("::")[3]) or 0, request, mode, body))

    def buttons(task: Task) -> list[dict]:
        if task.action == "DESCRIBE":
            return []
        h = task.hash
        if task.action == "UPSCALE":
            if _V7.search(task.prompt):  # the proxy's V7 upscales (subtle and creative)
                upscales = [("upsample_v7_2x_subtle", "Upscale (Subtle)"), ("upsample_v7_2x_creative", "Upscale (Creative)")]
            else:
                upscales = [("upsample_v6_2x_subtle", "Upscale (Subtle)")]
            spec = [*upscales, ("low_variation", "Vary (Subtle)"), ("high_variation", "Vary (Strong)")]
            return [{"customId": f"MJ::JOB::{k}::1::{h}::SOLO", "emoji": "", "label": label, "style": 2, "type": 2} for k, label in spec]
        out = [{"customId": f"MJ::JOB::upsample::{i}::{h}", "emoji": "", "label": f"U{i}", "style": 2, "type": 2} for i in range(1, 5)]
        out.append({"customId": f"MJ::JOB::reroll::0::{h}::SOLO", "emoji": "🔄", "label": "", "style": 2, "type": 2})
        out += [{"customId": f"MJ::JOB::variation::{i}::{h}", "emoji": "", "label": f"V{i}", "style": 2, "type": 2} for i in range(1, 5)]
        return out

    def status_of(task: Task) -> tuple[str, str]:
        elapsed = time.monotonic() - task.created
        if task.cancelled:
            return "FAILURE", ""
        if elapsed < task.seconds * 0.1:
            return "SUBMITTED", "0%"
        if elapsed < task.seconds:
            return "IN_PROGRESS", f"{int(100 * elapsed / task.seconds)}%"
        return ("FAILURE", "") if task.fail_reason else ("SUCCESS", "100%")

    def view(task: Task) -> dict:
        status, progress = status_of(task)
        if status == "SUCCESS" and not task.image_url:
            fmt = "WEBP" if trueai else "PNG"
            data = fake_image(*task.size, f"{task.action}|{task.prompt}|{task.parent}|{task.index}|{task.id}", fmt)
            task.image_url = state.host_file(data, f"image/{fmt.lower()}", fmt.lower())
        out = {
            "id": task.id,
            "action": task.action,
            "status": status,
            "prompt": task.prompt,
            "promptEn": task.prompt,
            "description": task.description,
            "state": task.body.get("state"),
            "submitTime": int(time.time() * 1000),
            "startTime": None,
            "finishTime": int(time.time() * 1000) if status in ("SUCCESS", "FAILURE") else None,
            "progress": progress,
            "imageUrl": task.image_url if status == "SUCCESS" else preview if status == "IN_PROGRESS" else None,
            "failReason": ("取消任务" if task.cancelled else task.fail_reason) if status == "FAILURE" else None,
            "properties": {"finalPrompt": task.final_prompt or task.prompt, "discordInstanceId": "1118138338562560102"},
        }
        if trueai:
            out["buttons"] = buttons(task) if status == "SUCCESS" else []
            out["botType"] = task.body.get("botType", "MID_JOURNEY")
            out["mode"] = task.mode.removeprefix("/mj-").upper() or "FAST"
        else:
            out["properties"]["messageHash"] = task.hash
        return out

    async def fetch(task_id: str, mode: str = ""):
        task = tasks.get(task_id)
        if task is None:
            return Response(status_code=204) if trueai else Response(status_code=200, media_type="application/json")
        return view(task)

    async def cancel(task_id: str, mode: str = ""):
        task = tasks.get(task_id)
        if task is not None and status_of(task)[0] not in ("SUCCESS", "FAILURE"):
            task.cancelled = True
        return Response(status_code=200)

    def bound(endpoint, mode: str):
        async def handler(request: Request):
            if "task_id" in request.path_params:
                return await endpoint(request.path_params["task_id"], mode=mode)
            return await endpoint(request, mode=mode)

        return handler

    def route(path: str, endpoint, method: str = "POST") -> None:
        for mode in MODES if trueai else ("",):
            app.add_api_route(f"{mode}{path}", bound(endpoint, mode), methods=[method])

    route("/mj/submit/imagine", imagine)
    route("/mj/submit/blend", blend)
    route("/mj/submit/describe", describe)
    route("/mj/task/{task_id}/fetch", fetch, "GET")
    if trueai:
        route("/mj/submit/action", action)
        route("/mj/submit/upload-discord-images", upload_discord_images)
        route("/mj/task/{task_id}/cancel", cancel)
    else:
        app.add_api_route("/mj/submit/change", change, methods=["POST"])

        async def simple_change(request: Request):
            body = await body_of(request) or {}
            m = re.match(r"^\s*(\S+)\s+(?:([UV])([1-4])|R)\s*$", str(body.get("content") or ""))
            if not m:
                return vo(4, "content参数错误")
            parent = tasks.get(m.group(1))
            if (refused := ready(parent)) is not None:
                return refused
            act = {"U": "UPSCALE", "V": "VARIATION"}.get(m.group(2) or "", "REROLL")
            return accepted(derived(parent, act, int(m.group(3) or 0), request, "", body))

        app.add_api_route("/mj/submit/simple-change", simple_change, methods=["POST"])

    @app.get("/_emulator/midjourney/tasks")
    async def list_tasks():
        def short(body: dict) -> dict:
            out = dict(body)
            for key in ("base64", "base64Array"):
                if isinstance(out.get(key), str):
                    out[key] = f"<data url {len(out[key])} chars>"
                elif isinstance(out.get(key), list):
                    out[key] = [f"<data url {len(v)} chars>" for v in out[key]]
            return out

        return {"uploaded": uploaded, "tasks": [
            {"id": t.id, "action": t.action, "path": t.path, "mode": t.mode, "body": short(t.body), "parent": t.parent,
             "index": t.index, "cancelled": t.cancelled}
            for t in tasks.values()
        ]}

    return install(app, state, authorized)
