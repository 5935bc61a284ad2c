"""ComfyUI's native API (docs/provider-contracts-2.md §13a), one server (or a proxy in front).

Models are workflow templates, the operator's files (`COMFYUI_WORKFLOWS`, a folder of
`<catalog model id>.json`, checked at start-up): an API-format workflow and the node
inputs the request's fields go into (`worker.providers.comfyui_templates`).

One generation: the input image (if any) goes up through `POST /upload/image`; the
filled workflow is queued with `POST /prompt` under a client id of its own, whose
WebSocket (`/ws?clientId=`, opened first so no event is missed) reports `progress`,
previews (partial images, when the client streams) and the end (`executing` with node
null, `execution_error`, `execution_interrupted`). Without a WebSocket (a proxy that
drops it) the adapter polls `/history/{id}` instead. The history entry says how it
ended and which files it made; they come from `/view`. A cancel deletes the prompt from
the queue and, once it runs, interrupts it (`/interrupt` with its prompt id; builds older
than that field stop whatever runs, which is this prompt: one runs at a time).
ComfyUI has no moderation and no auth (`COMFYUI_API_KEY`, optional, is sent as a Bearer
token to a proxy in front).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import httpx
from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from svckit.logging import get_logger
from worker.providers.adapter import Context, JobClock, Provider
from worker.providers.base import Progress, ProviderError, ProviderResult
from worker.providers.comfyui_templates import Template, load_templates
from worker.providers.images import deliver
from worker.providers.input_images import EXTENSIONS, images_of
from worker.providers.settings import UpstreamSettings

log = get_logger(__name__)
PREVIEW_IMAGE = 1  # binary frame event type: 4 bytes type, 4 bytes format, the image
MAX_FRAME_BYTES = 64 * 1024 * 1024


class ComfyUISettings(UpstreamSettings):
    base_url: str = Field(validation_alias="COMFYUI_BASE_URL", min_length=1)
    api_key: SecretStr = Field(SecretStr(""), validation_alias="COMFYUI_API_KEY")
    # Folder of workflow templates, one `<catalog model id>.json` per model.
    workflows: Annotated[dict[str, Template], NoDecode] = Field(validation_alias="COMFYUI_WORKFLOWS")

    @field_validator("workflows", mode="before")
    @classmethod
    def _load(cls, value: object) -> object:
        return load_templates(Path(value)) if isinstance(value, str | Path) else value


def _error_body(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def validation_message(body: dict) -> str:
    """`{"error": {type, message, details}, "node_errors": {id: {errors: [...], class_type}}}` in one line."""
    error = body.get("error")
    parts = [str(error.get("message") or error.get("type")) if isinstance(error, dict) else str(error or "")]
    for node, found in (body.get("node_errors") or {}).items():
        if not isinstance(found, dict):
            continue
        for item in found.get("errors") or []:
            if isinstance(item, dict):
                parts.append(f"node {node} ({found.get('class_type')}): {item.get('message')}: {item.get('details')}")
    return "; ".join(p for p in parts if p)[:300]


class ComfyUIProvider(Provider):
    name = "comfyui"
    settings_type = ComfyUISettings
    settings: ComfyUISettings

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.templates: dict[str, Template] = self.settings.workflows
        # Prompt id -> whether it started running, while a cancel may still need it.
        self._prompts: dict[str, bool] = {}

    @staticmethod
    def headers(settings: ComfyUISettings) -> dict[str, str]:
        key = settings.api_key.get_secret_value()
        return {"Authorization": f"Bearer {key}"} if key else {}

    @staticmethod
    def classify(response: httpx.Response) -> ProviderError | None:
        if response.status_code == 400 and (body := _error_body(response)):
            # The catalog checked the request: a workflow ComfyUI refuses is this server's
            # (a checkpoint it lacks, a node not installed), and another route may serve it.
            return ProviderError(
                ErrorCode.PROVIDER_ERROR, f"comfyui refused the workflow: {validation_message(body)}", retryable=True
            )
        return None

    async def run(self, generation: gen.Generation, progress: Progress, clock: JobClock) -> ProviderResult:
        template = self.templates.get(generation.model)
        if template is None:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, f"comfyui has no workflow template for {generation.model}", retryable=True
            )
        inputs = images_of(generation)
        if len(inputs) > 1:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} takes one input image")
        image = await self._upload(generation, inputs[0]) if inputs else ""
        workflow = template.fill(generation, image)
        client_id = uuid.uuid4().hex
        async with self._events(client_id) as socket:
            queued = await self.http.request(
                "POST", "/prompt", json={"prompt": workflow, "client_id": client_id, "extra_data": {}}
            )
            prompt_id = str(queued.json().get("prompt_id") or "")
            if not prompt_id:
                raise ProviderError(ErrorCode.PROVIDER_ERROR, "comfyui queued the prompt without an id", retryable=True)
            self._prompts[prompt_id] = False
            progress.upstream(prompt_id)
            await progress(0.0)
            try:
                entry = await self._follow(socket, prompt_id, generation, progress, clock)
                result = await self._collect(generation, entry)
            except ProviderError as exc:
                if exc.code is not ErrorCode.TIMEOUT:  # a timed-out prompt is cancelled next
                    self._prompts.pop(prompt_id, None)
                raise
        self._prompts.pop(prompt_id, None)
        return result

    async def _upload(self, generation: gen.Generation, ref: gen.InputImage) -> str:
        """The input image in ComfyUI's input folder, under a name of this generation; the
        value LoadImage.image takes."""
        item = await self.inputs.read(ref)
        filename = f"pixelmesh-{generation.id}.{EXTENSIONS.get(item.mime_type, 'png')}"
        answer = await self.http.request(
            "POST",
            "/upload/image",
            files={"image": (filename, item.data, item.mime_type)},
            data={"type": "input", "overwrite": "true"},
        )
        body = answer.json()
        name, subfolder = str(body.get("name") or ""), str(body.get("subfolder") or "")
        if not name:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, "comfyui stored the input image without a name", retryable=True
            )
        return f"{subfolder}/{name}" if subfolder else name

    @contextlib.asynccontextmanager
    async def _events(self, client_id: str) -> AsyncIterator[ClientConnection | None]:
        """The client id's WebSocket, or None when it cannot be opened (then history is polled)."""
        url = httpx.URL(self.settings.base_url.rstrip("/") + "/ws").copy_merge_params({"clientId": client_id})
        url = url.copy_with(scheme="wss" if url.scheme == "https" else "ws")
        try:
            socket = await connect(
                str(url),
                additional_headers=self.headers(self.settings),
                max_size=MAX_FRAME_BYTES,
                open_timeout=10,
                origin=None,  # a browser-like Origin is refused (403) without --enable-cors-header
            )
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            log.info("comfyui websocket unavailable, polling history", error=type(exc).__name__)
            yield None
            return
        try:
            yield socket
        finally:
            await socket.close()

    async def _follow(
        self,
        socket: ClientConnection | None,
        prompt_id: str,
        generation: gen.Generation,
        progress: Progress,
        clock: JobClock,
    ) -> dict:
        """Progress until the prompt ends; its history entry."""
        percent = 0.0
        while socket is not None:
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancel that
                # lands as a frame arrives, and the cancelled job would run on.
                async with asyncio.timeout(self.settings.poll_max_interval_seconds * 6):
                    frame = await socket.recv()
            except TimeoutError:  # quiet for long: a missed end shows in the history
                if entry := await self._history(prompt_id):
                    return entry
                continue
            except ConnectionClosed:
                log.info("comfyui websocket closed, polling history", prompt_id=prompt_id)
                break
            if isinstance(frame, bytes):
                await self._preview(frame, prompt_id, generation, progress, percent)
            elif (moved := await self._event(frame, prompt_id, progress, percent)) is None:
                break
            else:
                percent = moved
        while not (entry := await self._history(prompt_id)):
            await clock.wait()
        return entry

    async def _event(self, frame: str, prompt_id: str, progress: Progress, percent: float) -> float | None:
        """Apply one text frame: the prompt's progress now, None once it ended."""
        try:
            message = json.loads(frame)
        except ValueError:
            return percent
        if not isinstance(message, dict):
            return percent
        kind, data = message.get("type"), message.get("data")
        if not isinstance(data, dict) or data.get("prompt_id") != prompt_id:
            return percent
        if kind == "execution_start":
            self._prompts[prompt_id] = True
        elif kind == "progress" and isinstance(data.get("max"), int | float) and data["max"] > 0:
            percent = min(99.0, 100.0 * float(data.get("value") or 0) / float(data["max"]))
            await progress(percent)
        elif kind == "executing" and data.get("node") is None or kind == "execution_success":
            return None
        elif kind == "execution_error":
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR,
                f"comfyui failed in node {data.get('node_id')} ({data.get('node_type')}): "
                f"{self.http.scrub(str(data.get('exception_message') or data.get('exception_type')))[:300]}",
                retryable=True,
            )
        elif kind == "execution_interrupted":
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "comfyui interrupted the prompt", retryable=True)
        return percent

    async def _preview(
        self, frame: bytes, prompt_id: str, generation: gen.Generation, progress: Progress, percent: float
    ) -> None:
        """A sampler preview, as a partial image of a streaming client."""
        if not generation.params.stream or len(frame) < 8 or not self._prompts.get(prompt_id):
            return
        kind, _fmt = struct.unpack(">II", frame[:8])
        if kind != PREVIEW_IMAGE:
            return
        try:
            partial = await deliver(frame[8:], generation, self.name, exact_size=True)
        except ProviderError:
            return  # a broken preview costs nothing: the result is what counts
        await progress(percent, partial)

    async def _history(self, prompt_id: str) -> dict:
        body = (await self.http.request("GET", f"/history/{prompt_id}")).json()
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry if isinstance(entry, dict) else {}

    async def _collect(self, generation: gen.Generation, entry: dict) -> ProviderResult:
        status = entry.get("status") or {}
        if status.get("status_str") == "error":  # an entry means finished, not succeeded
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, f"comfyui failed the prompt: {_failure(status)}", retryable=True
            )
        files = [
            image
            for output in (entry.get("outputs") or {}).values()
            if isinstance(output, dict)
            for image in output.get("images") or []
            if isinstance(image, dict) and image.get("filename")
        ]
        saved = [f for f in files if f.get("type") == "output"] or files
        wanted = generation.params.n or 1
        if len(saved) < wanted:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, f"comfyui made {len(saved)} of {wanted} images", retryable=True
            )
        images = []
        for file in saved[:wanted]:
            params = {k: str(file.get(k) or "") for k in ("filename", "subfolder", "type")}
            data = (await self.http.request("GET", "/view", params=params)).content
            if len(data) > self.settings.download_max_bytes:
                raise ProviderError(
                    ErrorCode.PROVIDER_ERROR, f"comfyui result is larger than {self.settings.download_max_bytes} bytes"
                )
            images.append(await deliver(data, generation, self.name, exact_size=True))
        return ProviderResult(images)

    async def cancel(self, upstream_id: str) -> None:
        started = self._prompts.pop(upstream_id, None)
        if started is None:
            log.info("no comfyui prompt known by this id", prompt_id=upstream_id)
            return
        calls: list[tuple[str, Any]] = [("/queue", {"delete": [upstream_id]})]
        if started:
            calls.insert(0, ("/interrupt", {"prompt_id": upstream_id}))
        for path, body in calls:
            try:
                await self.http.request("POST", path, json=body)
            except ProviderError as exc:
                log.info("comfyui did not take the cancel", prompt_id=upstream_id, path=path, error=exc.message)


def _failure(status: dict) -> str:
    """The exception of an `execution_error` among the history's messages."""
    for item in status.get("messages") or []:
        if isinstance(item, list) and len(item) == 2 and item[0] == "execution_error" and isinstance(item[1], dict):
            return str(item[1].get("exception_message") or item[1].get("exception_type"))[:300]
    return "no message"
