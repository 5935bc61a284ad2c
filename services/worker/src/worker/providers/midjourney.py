"""A Midjourney proxy (novicezk or trueai-org, MIDJOURNEY_FLAVOR): imagine, actions on an
earlier result (U1-U4, V1-V4, reroll, any trueai button), blend, describe.

Jobs take minutes. Each is one coroutine that polls `GET /mj/task/{id}/fetch` with a
growing interval and otherwise sleeps, so one worker holds a thousand of them.
The result of imagine/variation/reroll/blend is Midjourney's 2x2 grid, stored as one
image (the proxies' `imageUrl`), with the buttons that act on it (U1 upscales the first
quarter, ...). describe produces text (`descriptions`), no image.

An action needs the parent's upstream task id. The worker gets only the new generation,
so it reads the parent through the status client in its context: the upstream id is on
the parent's successful midjourney attempt, its buttons on the parent itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import httpx
from pydantic import Field, SecretStr, field_validator

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.status.v1 import status_service_pb2
from svckit.accounts import account_metadata
from svckit.errors import ErrorCode
from svckit.logging import get_logger
from worker.providers import midjourney_api as mj
from worker.providers.adapter import Context
from worker.providers.base import ProviderError, ProviderResult
from worker.providers.images import deliver
from worker.providers.input_images import images_of, is_client_url
from worker.providers.options import provider_options
from worker.providers.polling import Poll, PollingProvider, Task, percent_of
from worker.providers.settings import UpstreamSettings

log = get_logger(__name__)
# Fetches that find no task right after a submit before the task counts as lost.
MISSING_TOLERANCE = 3


class MidjourneySettings(UpstreamSettings):
    # The proxy's root (http://host:8080); a trailing /mj (novicezk's context path) is fine.
    base_url: str = Field(validation_alias="MIDJOURNEY_BASE_URL", min_length=1)
    # novicezk's mj.api-secret or trueai's user token; empty when the proxy has no auth.
    api_key: SecretStr = Field(SecretStr(""), validation_alias="MIDJOURNEY_API_KEY")
    flavor: str = Field("novicezk", validation_alias="MIDJOURNEY_FLAVOR")

    @field_validator("flavor")
    @classmethod
    def _known(cls, value: str) -> str:
        mj.of(value)
        return value

    @field_validator("base_url")
    @classmethod
    def _root(cls, value: str) -> str:
        value = value.rstrip("/")
        return value[: -len("/mj")] if value.endswith("/mj") else value


class MidjourneyProvider(PollingProvider):
    name = "midjourney"
    settings_type = MidjourneySettings
    settings: MidjourneySettings

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self._flavor = mj.of(self.settings.flavor)

    @staticmethod
    def headers(settings: MidjourneySettings) -> dict[str, str]:
        return mj.of(settings.flavor).headers(settings.api_key.get_secret_value())

    @staticmethod
    def classify(response: httpx.Response) -> ProviderError | None:
        # trueai answers 404 {code: 3} when an action's parent task is gone.
        if response.status_code == 404:
            try:
                body = response.json()
            except ValueError:
                return None
            if isinstance(body, dict) and body.get("code") == mj.NOT_FOUND:
                return ProviderError(ErrorCode.NOT_FOUND, "the parent task no longer exists on the Midjourney proxy")
        return None

    async def requests(self, generation: gen.Generation) -> list[tuple[str, str, dict]]:
        """One task: (the speed mode's path prefix, the submit path, its body)."""
        kind = generation.params.kind or gen.GENERATION_KIND_GENERATE
        prefix = self._flavor.prefix(generation.model)
        state = {"state": generation.id}
        body: dict[str, Any]
        if kind == gen.GENERATION_KIND_GENERATE:
            prompt = mj.imagine_prompt(
                generation,
                self._flavor,
                options=provider_options(generation),
                omni_reference=await self._omni_reference(generation, prefix),
            )
            body = {"prompt": prompt, **state}
            images = [i for i in generation.params.input_images if (i.role or "image") == "image"]
            if images:  # image prompts
                body["base64Array"] = [await self.inputs.data_url(i) for i in images]
            if self._flavor.name == mj.TRUEAI:
                body["botType"] = "MID_JOURNEY"
            path = "/mj/submit/imagine"
        elif kind == gen.GENERATION_KIND_ACTION:
            path, body = await self._action(generation)
            body.update(state)
        elif kind == gen.GENERATION_KIND_BLEND:
            images = images_of(generation)
            if not 2 <= len(images) <= 5:
                raise ProviderError(ErrorCode.INVALID_REQUEST, f"a blend takes 2 to 5 images; got {len(images)}")
            path = "/mj/submit/blend"
            body = {
                "base64Array": [await self.inputs.data_url(i) for i in images],
                "dimensions": mj.blend_dimensions(generation.width, generation.height),
                **state,
            }
        elif kind == gen.GENERATION_KIND_DESCRIBE:
            images = images_of(generation)
            if len(images) != 1:
                raise ProviderError(ErrorCode.INVALID_REQUEST, f"describe takes one image; got {len(images)}")
            path = "/mj/submit/describe"
            if self._flavor.name == mj.TRUEAI and is_client_url(images[0]):
                body = {"link": images[0].url, **state}
            else:
                body = {"base64": await self.inputs.data_url(images[0]), **state}
        else:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"Midjourney cannot do {gen.GenerationKind.Name(kind)}")
        return [(prefix, path, body)]

    async def submit(self, request: tuple[str, str, dict]) -> Task:
        """POST a submit; a full queue (code 23) is retried like a 429, within the retry budget."""
        prefix, path, body = request
        retry = self.http.retry
        deadline = time.monotonic() + retry.budget_seconds
        attempt = 0
        while True:
            resp = await self.http.request("POST", prefix + path, json=body)
            try:
                return Task(mj.submitted_task_id(_json(resp)), {"prefix": prefix, "missing": 0})
            except mj.QueueFull:
                attempt += 1
                wait = retry.backoff(attempt)
                if time.monotonic() + wait > deadline:
                    raise
                log.info("midjourney queue full, retrying", attempt=attempt, wait_s=round(wait, 2))
                await asyncio.sleep(wait)

    async def poll(self, task: Task) -> Poll:
        found = _json(await self.http.request("GET", f"{task.state['prefix']}/mj/task/{task.id}/fetch"))
        if not isinstance(found, dict) or not found:
            task.state["missing"] += 1  # novicezk: empty 200; trueai: 204
            if task.state["missing"] >= MISSING_TOLERANCE:
                raise ProviderError(
                    ErrorCode.PROVIDER_ERROR, f"the Midjourney proxy lost task {task.id}", retryable=True
                )
            return Poll()
        task.state["missing"] = 0
        status = found.get("status")
        if status == "SUCCESS":
            task.state["task"] = found
            return Poll(done=True)
        if status not in mj.RUNNING_STATES:
            if status in ("FAILURE", "CANCEL", "MODAL"):
                raise mj.failure_of(found)
            log.warning("unknown midjourney task status", status=str(status)[:40], task_id=task.id)
        return Poll(percent=percent_of(found.get("progress")))

    async def fetch(self, task: Task) -> dict:
        return task.state["task"]

    async def collect(self, generation: gen.Generation, outputs: list[dict]) -> ProviderResult:
        [task] = outputs
        if generation.params.kind == gen.GENERATION_KIND_DESCRIBE:
            descriptions = mj.descriptions_of(task)
            if not descriptions:
                raise ProviderError(
                    ErrorCode.PROVIDER_ERROR, "Midjourney described the image with no prompts", retryable=True
                )
            return ProviderResult([], descriptions=descriptions)
        image_url = task.get("imageUrl")
        if not image_url:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "Midjourney finished without an image", retryable=True)
        data = await self.http.download(image_url, self.settings.download_max_bytes)
        # The grid (or upscale) keeps Midjourney's own pixel size: it is the product.
        image = await deliver(data, generation, self.name)
        return ProviderResult([image], buttons=mj.buttons_of(task, self._flavor))

    async def _omni_reference(self, generation: gen.Generation, prefix: str) -> str:
        """V7's omni reference (the image_url) as a URL Discord can read: the client's http(s)
        URL as it is; any other image uploaded through trueai's upload-discord-images first
        (novicezk has no upload: its base64Array would make an image prompt, not an --oref)."""
        url = generation.params.image_url
        if not url:
            return ""
        ref = gen.InputImage(url=url)
        if is_client_url(ref):
            return url
        if not self._flavor.has_uploads:
            raise ProviderError(
                ErrorCode.INVALID_REQUEST,
                "this Midjourney proxy (novicezk) takes an omni reference only as a public http(s) image_url",
            )
        body = {"base64Array": [await self.inputs.data_url(ref)]}
        return mj.uploaded_url(_json(await self.http.request("POST", f"{prefix}{mj.UPLOAD_PATH}", json=body)))

    async def _action(self, generation: gen.Generation) -> tuple[str, dict]:
        """change (novicezk) or action (trueai) on the parent's upstream task."""
        params = generation.params
        if not params.action.strip():
            raise ProviderError(ErrorCode.INVALID_REQUEST, "an action needs the button to press (action)")
        parent, task_id = await self._parent_task(generation)
        if self._flavor.has_buttons:
            return "/mj/submit/action", {
                "taskId": task_id,
                "customId": mj.custom_id_for(params.action, list(parent.buttons)),
            }
        change = mj.parse_change(params.action)
        if change is None:
            raise ProviderError(
                ErrorCode.INVALID_REQUEST,
                f"this Midjourney proxy (novicezk) only does U1-U4, V1-V4 and reroll; not {params.action!r}",
            )
        return "/mj/submit/change", mj.change_body(task_id, change)

    async def _parent_task(self, generation: gen.Generation) -> tuple[gen.Generation, str]:
        parent_id = generation.params.parent_generation_id
        if not parent_id:
            raise ProviderError(ErrorCode.INVALID_REQUEST, "an action needs parent_generation_id")
        parent = await self._parent(parent_id, generation.account_id)
        if parent is None or parent.account_id != generation.account_id:
            raise ProviderError(ErrorCode.NOT_FOUND, f"generation {parent_id} not found")
        if parent.state != gen.GENERATION_STATE_SUCCEEDED:
            raise ProviderError(
                ErrorCode.INVALID_REQUEST, f"generation {parent_id} has not succeeded; its buttons cannot be pressed"
            )
        for attempt in reversed(parent.attempts):
            if attempt.provider == self.name and attempt.upstream_id and not attempt.error.code:
                return parent, attempt.upstream_id
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"generation {parent_id} was not made by Midjourney")

    async def _parent(self, generation_id: str, account_id: str) -> gen.Generation | None:
        """The parent generation, read from the status service as its account's (another's is not found)."""
        if self.context.status is None:
            raise ProviderError(ErrorCode.INTERNAL, "this worker has no status service to read parent generations from")
        try:
            resp = await self.context.status.GetGeneration(
                status_service_pb2.GetGenerationRequest(generation_id=generation_id),
                metadata=account_metadata(account_id),
                timeout=5,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise ProviderError(
                ErrorCode.UNAVAILABLE, f"reading the parent generation failed: {exc.code().name}", retryable=True
            ) from exc
        return resp.generation

    async def cancel(self, upstream_id: str) -> None:
        if not self._flavor.can_cancel:
            log.info("novicezk's Midjourney proxy has no cancel; the task runs out upstream", task_id=upstream_id)
            return
        await self.http.request("POST", f"/mj/task/{upstream_id}/cancel")


def _json(response: httpx.Response) -> object:
    if not response.content.strip():
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise ProviderError(
            ErrorCode.PROVIDER_ERROR, "the Midjourney proxy answered something that is not JSON", retryable=True
        ) from exc
