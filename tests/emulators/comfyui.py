"""ComfyUI native API emulator (docs/provider-contracts-2.md §13a), one server on :8188.

- No auth. A request whose `Origin` host differs from its `Host` is refused 403 (ComfyUI
  without --enable-cors-header).
- `POST /prompt` `{prompt, client_id, extra_data}`: the API-format workflow is validated
  against the node types below (inputs required, ranges, choice lists, links, uploaded
  files, at least one output node), with ComfyUI's 400 shapes (`no_prompt`,
  `invalid_prompt`, `prompt_no_outputs`, `prompt_outputs_failed_validation` with
  `node_errors`); otherwise `{prompt_id, number, node_errors: {}}`. One prompt runs at a
  time over `job_seconds` (a FIFO queue).
- `ws /ws?clientId=`: `status` on connect; for each prompt of that client
  `execution_start`, `execution_cached`, `executing` per node, `progress` of the KSampler
  steps, one binary preview (type 1, format 1 = JPEG) half-way, `executed` for the output
  nodes, `execution_success` and `executing` with node null; or `execution_error` (a
  positive prompt with "upstream-error": CUDA out of memory) / `execution_interrupted`.
- `GET /history/{id}` (`{}` until the prompt ended, then outputs, status, meta),
  `GET /view?filename=&subfolder=&type=`, `POST /upload/image` (multipart; a clashing
  name without overwrite becomes "name (1).ext"), `POST /interrupt` (`{"prompt_id"}`
  optional: another id is ignored), `POST /queue` (`{"delete": [...]}`, `{"clear": true}`),
  `GET /queue`, `GET /system_stats`. No moderation: ComfyUI has none.
- `GET /_emulator/comfyui/prompts`, `GET /_emulator/comfyui/uploads`;
  `POST /_emulator/comfyui/websocket {"enabled": false}` refuses WebSockets (a proxy that
  drops them), so clients must poll the history.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import time
import uuid
from dataclasses import dataclass, field

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from PIL import Image

from tests.emulators.harness import EmulatorState, fake_image, install

CHECKPOINTS = ["sd_xl_base_1.0.safetensors", "flux1-dev-fp8.safetensors", "v1-5-pruned-emaonly.safetensors"]
SAMPLERS = ["euler", "euler_ancestral", "dpmpp_2m", "dpmpp_2m_sde", "ddim"]
SCHEDULERS = ["normal", "karras", "exponential", "simple", "sgm_uniform"]
LINK = ("link",)
SIDE = ("int", 16, 16384, 8)
# class_type -> input -> spec; ("link",) inputs take [node id, output index].
NODES: dict[str, dict[str, tuple]] = {
    "CheckpointLoaderSimple": {"ckpt_name": ("choice", CHECKPOINTS)},
    "CLIPTextEncode": {"text": ("str",), "clip": LINK},
    "EmptyLatentImage": {"width": SIDE, "height": SIDE, "batch_size": ("int", 1, 4096, 1)},
    "EmptySD3LatentImage": {"width": SIDE, "height": SIDE, "batch_size": ("int", 1, 4096, 1)},
    "FluxGuidance": {"guidance": ("float", 0.0, 100.0), "conditioning": LINK},
    "KSampler": {"seed": ("int", 0, 2**64 - 1, 1), "steps": ("int", 1, 10000, 1), "cfg": ("float", 0.0, 100.0),
                 "sampler_name": ("choice", SAMPLERS), "scheduler": ("choice", SCHEDULERS),
                 "denoise": ("float", 0.0, 1.0), "model": LINK, "positive": LINK, "negative": LINK,
                 "latent_image": LINK},
    "VAEDecode": {"samples": LINK, "vae": LINK},
    "VAEEncode": {"pixels": LINK, "vae": LINK},
    "LoadImage": {"image": ("upload",)},
    "SaveImage": {"filename_prefix": ("str",), "images": LINK},
    "PreviewImage": {"images": LINK},
}
OUTPUT_NODES = {"SaveImage": "output", "PreviewImage": "temp"}


@dataclass
class Prompt:
    id: str
    number: int
    workflow: dict
    client_id: str
    state: str = "pending"  # pending -> running -> done | deleted
    interrupted: bool = False
    history: dict | None = None
    events: list[str] = field(default_factory=list)


def _error(kind: str, message: str, details: str = "", **extra) -> dict:
    return {"type": kind, "message": message, "details": details, "extra_info": extra}


def validate(workflow: object, uploads: dict) -> tuple[dict | None, dict]:
    """(the top-level error or None, node_errors), as ComfyUI's validate_prompt answers."""
    if not isinstance(workflow, dict):
        return _error("invalid_prompt", "Invalid prompt: not an object"), {}
    for node_id, node in workflow.items():
        kind = node.get("class_type") if isinstance(node, dict) else None
        if kind not in NODES:
            return _error("invalid_prompt", f"Cannot execute because node {kind} does not exist.",
                          f"Node ID '#{node_id}'"), {}
    if not any(node["class_type"] in OUTPUT_NODES for node in workflow.values()):
        return _error("prompt_no_outputs", "Prompt has no outputs"), {}
    node_errors: dict = {}
    for node_id, node in workflow.items():
        errors = []
        inputs = node.get("inputs") if isinstance(node.get("inputs"), dict) else {}
        for name, spec in NODES[node["class_type"]].items():
            value = inputs.get(name)
            if name not in inputs:
                errors.append(_error("required_input_missing", "Required input is missing", name, input_name=name))
            elif spec is LINK or spec[0] == "link":
                if not (isinstance(value, list) and len(value) == 2 and str(value[0]) in workflow):
                    errors.append(_error("bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                                         f"{name}, {value}", input_name=name))
            elif spec[0] == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                errors.append(_error("invalid_input_type", "Failed to convert an input value to a INT value",
                                     f"{name}, {value}", input_name=name))
            elif spec[0] in ("int", "float") and not isinstance(value, bool) and isinstance(value, int | float):
                if value < spec[1]:
                    errors.append(_error("value_smaller_than_min", f"Value {value} smaller than min of {spec[1]}",
                                         f"{name}", input_name=name))
                elif value > spec[2]:
                    errors.append(_error("value_bigger_than_max", f"Value {value} bigger than max of {spec[2]}",
                                         f"{name}", input_name=name))
            elif spec[0] == "float":
                errors.append(_error("invalid_input_type", "Failed to convert an input value to a FLOAT value",
                                     f"{name}, {value}", input_name=name))
            elif spec[0] == "str" and not isinstance(value, str):
                errors.append(_error("invalid_input_type", "Failed to convert an input value to a STRING value",
                                     f"{name}, {value}", input_name=name))
            elif spec[0] == "choice" and value not in spec[1]:
                errors.append(_error("value_not_in_list", "Value not in list",
                                     f"{name}: '{value}' not in (list of length {len(spec[1])})", input_name=name))
            elif spec[0] == "upload" and value not in uploads:
                errors.append(_error("custom_validation_failed", "Custom validation failed for node",
                                     f"{name} - Invalid image file: {value}", input_name=name))
        if errors:
            node_errors[node_id] = {"errors": errors, "dependent_outputs": [], "class_type": node["class_type"]}
    return None, node_errors


def _linked(workflow: dict, node: dict, name: str) -> dict:
    return workflow[str(node["inputs"][name][0])]


def create_app(state: EmulatorState) -> FastAPI:
    app = FastAPI()
    prompts: dict[str, Prompt] = {}
    uploads: dict[str, bytes] = {}  # "subfolder/name" or "name" -> bytes (the input folder)
    outputs: dict[tuple[str, str, str], bytes] = {}  # (filename, subfolder, type) -> bytes
    sockets: dict[str, list[WebSocket]] = {}
    runtime = {"websocket": True, "counter": 0, "runner": None, "wake": None, "running": None}

    @app.middleware("http")
    async def origin(request: Request, call_next):
        path = request.url.path
        if path == "/_emulator/reset":
            if runtime["running"] is not None:  # what a test left running stops now
                runtime["running"].interrupted = True
            prompts.clear()
            uploads.clear()
            outputs.clear()
            runtime["websocket"] = True
        origin_header = request.headers.get("origin")
        if origin_header and origin_header.split("://")[-1] != request.headers.get("host"):
            return Response(status_code=403)
        return await call_next(request)

    install(app, state, lambda request: True)  # ComfyUI has no auth

    async def send(client_id: str, kind: str, data: dict) -> None:
        text = json.dumps({"type": kind, "data": data})
        for ws in list(sockets.get(client_id, [])):
            try:
                await ws.send_text(text)
            except Exception:  # a client that went away
                sockets[client_id].remove(ws)

    async def send_bytes(client_id: str, data: bytes) -> None:
        for ws in list(sockets.get(client_id, [])):
            try:
                await ws.send_bytes(data)
            except Exception:
                sockets[client_id].remove(ws)

    def finish(p: Prompt, status: str, messages: list, node_outputs: dict) -> None:
        p.state = "done"
        p.history = {
            "prompt": [p.number, p.id, p.workflow, {"client_id": p.client_id}, list(node_outputs)],
            "outputs": node_outputs,
            "status": {"status_str": status, "completed": status == "success", "messages": messages},
            "meta": {n: {"node_id": n, "display_node": n} for n in node_outputs},
        }

    async def execute(p: Prompt) -> None:
        wf = p.workflow
        started = int(time.time() * 1000)
        messages: list = [["execution_start", {"prompt_id": p.id, "timestamp": started}]]
        await send(p.client_id, "execution_start", {"prompt_id": p.id, "timestamp": started})
        await send(p.client_id, "execution_cached", {"nodes": [], "prompt_id": p.id, "timestamp": started})
        sampler_id, sampler = next(((k, v) for k, v in wf.items() if v["class_type"] == "KSampler"), (None, None))
        steps = int(sampler["inputs"]["steps"]) if sampler else 1
        positive = ""
        if sampler:
            conditioning = _linked(wf, sampler, "positive")
            while "conditioning" in conditioning["inputs"]:  # FluxGuidance and the like wrap the text
                conditioning = _linked(wf, conditioning, "conditioning")
            positive = conditioning["inputs"].get("text", "")
        seed = sampler["inputs"]["seed"] if sampler else 0
        latent = _linked(wf, sampler, "latent_image") if sampler else None
        if latent is not None and latent["class_type"] in ("EmptyLatentImage", "EmptySD3LatentImage"):
            width, height, batch = latent["inputs"]["width"], latent["inputs"]["height"], latent["inputs"]["batch_size"]
        elif latent is not None and latent["class_type"] == "VAEEncode":
            source = _linked(wf, latent, "pixels")
            with Image.open(io.BytesIO(uploads[source["inputs"]["image"]])) as image:
                width, height, batch = image.width // 8 * 8, image.height // 8 * 8, 1
        else:
            width, height, batch = 512, 512, 1
        for node_id in wf:
            await send(p.client_id, "executing", {"node": node_id, "display_node": node_id, "prompt_id": p.id})
            if node_id != sampler_id:
                continue
            ticks = min(steps, 10)
            for tick in range(1, ticks + 1):
                until = time.monotonic() + state.faults.job_seconds / ticks
                while not p.interrupted and time.monotonic() < until:
                    await asyncio.sleep(min(0.05, max(0.0, until - time.monotonic())))
                if p.interrupted:
                    data = {"prompt_id": p.id, "node_id": node_id, "node_type": "KSampler", "executed": [],
                            "timestamp": int(time.time() * 1000)}
                    messages.append(["execution_interrupted", data])
                    await send(p.client_id, "execution_interrupted", data)
                    finish(p, "error", messages, {})
                    return
                value = steps * tick // ticks
                await send(p.client_id, "progress", {"value": value, "max": steps, "prompt_id": p.id, "node": node_id})
                if tick == (ticks + 1) // 2:
                    preview = fake_image(min(width, 256), min(height, 256), f"preview|{p.id}", "JPEG")
                    await send_bytes(p.client_id, struct.pack(">II", 1, 1) + preview)
            if "upstream-error" in positive:
                data = {"prompt_id": p.id, "node_id": node_id, "node_type": "KSampler", "executed": [],
                        "exception_message": "CUDA out of memory. Tried to allocate 2.00 GiB",
                        "exception_type": "torch.OutOfMemoryError", "traceback": ["..."],
                        "current_inputs": {}, "current_outputs": {}, "timestamp": int(time.time() * 1000)}
                messages.append(["execution_error", data])
                await send(p.client_id, "execution_error", data)
                finish(p, "error", messages, {})
                return
        node_outputs: dict = {}
        for node_id, node in wf.items():
            folder = OUTPUT_NODES.get(node["class_type"])
            if folder is None:
                continue
            prefix = node["inputs"].get("filename_prefix", "ComfyUI")
            images = []
            for i in range(batch):
                runtime["counter"] += 1
                name = f"{prefix}_{runtime['counter']:05d}_.png"
                outputs[(name, "", folder)] = fake_image(width, height, f"{positive}|{seed}|{i}")
                images.append({"filename": name, "subfolder": "", "type": folder})
            node_outputs[node_id] = {"images": images}
            await send(p.client_id, "executed", {"node": node_id, "display_node": node_id,
                                                 "output": {"images": images}, "prompt_id": p.id})
        done = {"prompt_id": p.id, "timestamp": int(time.time() * 1000)}
        messages.append(["execution_success", done])
        await send(p.client_id, "execution_success", done)
        await send(p.client_id, "executing", {"node": None, "prompt_id": p.id})
        finish(p, "success", messages, node_outputs)

    async def runner() -> None:
        while True:
            pending = sorted((p for p in prompts.values() if p.state == "pending"), key=lambda p: p.number)
            if not pending:
                runtime["wake"].clear()
                await runtime["wake"].wait()
                continue
            p = pending[0]
            p.state = "running"
            runtime["running"] = p
            try:
                await execute(p)
            finally:
                runtime["running"] = None

    def wake() -> None:
        if runtime["runner"] is None:
            runtime["wake"] = asyncio.Event()
            runtime["runner"] = asyncio.get_running_loop().create_task(runner())
        runtime["wake"].set()

    @app.post("/prompt")
    async def queue_prompt(request: Request):
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or "prompt" not in body:
            return JSONResponse({"error": _error("no_prompt", "No prompt provided"), "node_errors": {}}, 400)
        error, node_errors = validate(body["prompt"], uploads)
        if error is not None:
            return JSONResponse({"error": error, "node_errors": {}}, 400)
        if node_errors:
            top = _error("prompt_outputs_failed_validation", "Prompt outputs failed validation")
            return JSONResponse({"error": top, "node_errors": node_errors}, 400)
        number = len(prompts)
        p = Prompt(str(uuid.uuid4()), number, body["prompt"], str(body.get("client_id") or ""))
        prompts[p.id] = p
        wake()
        return {"prompt_id": p.id, "number": number, "node_errors": {}}

    @app.websocket("/ws")
    async def events(ws: WebSocket) -> None:
        if not runtime["websocket"]:
            await ws.close(code=1008)
            return
        await ws.accept()
        client_id = ws.query_params.get("clientId") or uuid.uuid4().hex
        sockets.setdefault(client_id, []).append(ws)
        remaining = sum(1 for p in prompts.values() if p.state in ("pending", "running"))
        await ws.send_text(json.dumps({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": remaining}},
                                                                 "sid": client_id}}))
        try:
            while True:
                await ws.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            if ws in sockets.get(client_id, []):
                sockets[client_id].remove(ws)

    @app.get("/history/{prompt_id}")
    async def history(prompt_id: str):
        p = prompts.get(prompt_id)
        return {prompt_id: p.history} if p is not None and p.history is not None else {}

    @app.get("/view")
    async def view(filename: str, subfolder: str = "", type: str = "output"):  # noqa: A002 (ComfyUI's name)
        data = outputs.get((filename, subfolder, type))
        if data is None and type == "input":
            data = uploads.get(f"{subfolder}/{filename}" if subfolder else filename)
        if data is None:
            return Response(status_code=404)
        return Response(data, media_type="image/png")

    @app.post("/upload/image")
    async def upload(request: Request):
        form = await request.form()
        image = form.get("image")
        if image is None or isinstance(image, str):
            return Response(status_code=400)
        data = await image.read()
        subfolder = str(form.get("subfolder") or "")
        name = image.filename or "image.png"
        overwrite = str(form.get("overwrite") or "").lower() in ("true", "1")
        key = lambda n: f"{subfolder}/{n}" if subfolder else n  # noqa: E731
        if not overwrite:
            stem, dot, ext = name.rpartition(".")
            i = 1
            while key(name) in uploads:
                name = f"{stem} ({i}).{ext}" if dot else f"{ext} ({i})"
                i += 1
        uploads[key(name)] = data
        return {"name": name, "subfolder": subfolder, "type": str(form.get("type") or "input")}

    @app.post("/interrupt")
    async def interrupt(request: Request):
        try:
            body = await request.json()
        except ValueError:
            body = {}
        running = runtime["running"]
        wanted = body.get("prompt_id") if isinstance(body, dict) else None
        if running is not None and (wanted is None or wanted == running.id):
            running.interrupted = True
            running.events.append("interrupt")
        return Response(status_code=200)

    @app.post("/queue")
    async def queue_edit(request: Request):
        body = await request.json()
        for p in prompts.values():
            if p.state == "pending" and (body.get("clear") or p.id in (body.get("delete") or [])):
                p.state = "deleted"
                p.events.append("deleted")
        return Response(status_code=200)

    @app.get("/queue")
    async def queue_list():
        def item(p: Prompt) -> list:
            return [p.number, p.id, p.workflow, {"client_id": p.client_id}, []]
        return {"queue_running": [item(p) for p in prompts.values() if p.state == "running"],
                "queue_pending": [item(p) for p in prompts.values() if p.state == "pending"]}

    @app.get("/system_stats")
    async def system_stats():
        return {"system": {"os": "posix", "ram_total": 68719476736, "ram_free": 34359738368,
                           "comfyui_version": "0.3.40", "python_version": "3.11", "pytorch_version": "2.7.0"},
                "devices": [{"name": "cuda:0 emulated", "type": "cuda", "index": 0, "vram_total": 25769803776,
                             "vram_free": 20000000000, "torch_vram_total": 0, "torch_vram_free": 0}]}

    @app.get("/_emulator/comfyui/prompts")
    async def listing():
        return {"prompts": [{"id": p.id, "client_id": p.client_id, "workflow": p.workflow, "state": p.state,
                             "interrupted": p.interrupted, "events": p.events} for p in prompts.values()]}

    @app.get("/_emulator/comfyui/uploads")
    async def upload_listing():
        return {"uploads": {name: len(data) for name, data in uploads.items()}}

    @app.post("/_emulator/comfyui/websocket")
    async def websocket_switch(request: Request):
        runtime["websocket"] = bool((await request.json()).get("enabled", True))
        return {"ok": True}

    return app
