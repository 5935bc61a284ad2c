"""A Midjourney proxy (novicezk or trueai-org, MIDJOURNEY_FLAVOR): imagine, actions on an
earlier result (U1-U4, V1-V4, reroll, any trueai button), blend, describe.

Jobs take minutes. Each is one coroutine that polls `GET /mj/task/{id}/fetch` with a
growing interval and otherwise sleeps, so one worker holds a thousand of them.
The result of imagine/variation/reroll/blend is Midjourney's 2x2 grid, stored as one
image (the proxies' `imageUrl`), with the buttons that act on it (U1 upscales the first
quarter, ...). describe produces text (`descriptions`), no image.

An action needs the parent's upstream task id. The worker gets only the new generation,
so it reads the parent through the status service (STATUS_ADDR): the upstream id is on
the parent's successful midjourney attempt, its buttons on the parent itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

import grpc
import httpx
from pydantic import Field, field_validator

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.status.v1 import status_service_pb2, status_service_pb2_grpc
from svckit.accounts import ALL_ACCOUNTS, account_metadata
from svckit.errors import ErrorCode
from svckit.grpc_client import channel
from svckit.logging import get_logger
from svckit.settings import load_settings
from worker.providers import midjourney_api as mj
from worker.providers.base import Progress, Provider, ProviderError, ProviderResult
from worker.providers.input_images import InputImages, InputUpstreamSettings, images_of
from worker.providers.polling import POLL_CONNECTIONS, PollClock, percent_of
from worker.providers.sizing import deliver
from worker.providers.upstream import Upstream

log = get_logger(__name__)
ParentLookup = Callable[[str], Awaitable[gen.Generation | None]]
# Fetches that find no task right after a submit before the task counts as lost.
MISSING_TOLERANCE = 3


class MidjourneySettings(InputUpstreamSettings):
    # The proxy's root (http://host:8080); a trailing /mj (novicezk's context path) is fine.
    base_url: str = Field(validation_alias="MIDJOURNEY_BASE_URL", min_length=1)
    # novicezk's mj.api-secret or trueai's user token; empty when the proxy has no auth.
    api_key: str = Field("", validation_alias="MIDJOURNEY_API_KEY")
    flavor: str = Field("novicezk", validation_alias="MIDJOURNEY_FLAVOR")
    storage_addr: str = Field("", validation_alias="STORAGE_ADDR")
    status_addr: str = Field("", validation_alias="STATUS_ADDR")

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


class StatusParents:
    """Parent generations read from the status service."""

    def __init__(self, address: str) -> None:
        self._channel = channel(address)
        self._stub = status_service_pb2_grpc.StatusServiceStub(self._channel)

    async def __call__(self, generation_id: str) -> gen.Generation | None:
        try:
            resp = await self._stub.GetGeneration(
                status_service_pb2.GetGenerationRequest(generation_id=generation_id),
                metadata=account_metadata(ALL_ACCOUNTS),
                timeout=5,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise ProviderError(
                ErrorCode.UNAVAILABLE, f"reading the parent generation failed: {exc.code().name}", retryable=True
            ) from exc
        return resp.generation

    async def close(self) -> None:
        await self._channel.close()


class MidjourneyProvider(Provider):
    name = "midjourney"

    def __init__(self, settings: MidjourneySettings, parents: ParentLookup | None = None) -> None:
        self._settings = settings
        self._flavor = mj.of(settings.flavor)
        self._up = Upstream(
            self.name,
            settings.base_url,
            headers=self._flavor.headers(settings.api_key),
            secret=settings.api_key,
            retry=settings.retry_policy(),
            timeout=settings.request_timeout_seconds,
            classify=self._classify,
            max_connections=POLL_CONNECTIONS,
        )
        self._inputs = InputImages(
            self.name,
            settings.storage_addr,
            self._up,
            settings.download_max_bytes,
            allow_private_urls=settings.input_urls_allow_private,
        )
        self._status = StatusParents(settings.status_addr) if parents is None and settings.status_addr else None
        self._parents = parents or self._status

    @classmethod
    def from_env(cls) -> MidjourneyProvider:
        return cls(load_settings(MidjourneySettings))

    async def close(self) -> None:
        await self._inputs.close()
        if self._status is not None:
            await self._status.close()
        await self._up.close()

    def _classify(self, response: httpx.Response) -> ProviderError | None:
        # trueai answers 404 {code: 3} when an action's parent task is gone.
        if response.status_code == 404:
            try:
                body = response.json()
            except ValueError:
                return None
            if isinstance(body, dict) and body.get("code") == mj.NOT_FOUND:
                return ProviderError(ErrorCode.NOT_FOUND, "the parent task no longer exists on the Midjourney proxy")
        return None

    async def generate(self, generation: gen.Generation, progress: Progress) -> ProviderResult:
        kind = generation.params.kind or gen.GENERATION_KIND_GENERATE
        prefix = self._flavor.prefix(generation.model)
        state = {"state": generation.id}
        if kind == gen.GENERATION_KIND_GENERATE:
            body = {"prompt": mj.imagine_prompt(generation, self._flavor), **state}
            images = images_of(generation)
            if images:  # image prompts
                body["base64Array"] = [await self._inputs.data_url(i) for i in images]
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
                "base64Array": [await self._inputs.data_url(i) for i in images],
                "dimensions": mj.blend_dimensions(generation.width, generation.height),
                **state,
            }
        elif kind == gen.GENERATION_KIND_DESCRIBE:
            images = images_of(generation)
            if len(images) != 1:
                raise ProviderError(ErrorCode.INVALID_REQUEST, f"describe takes one image; got {len(images)}")
            path = "/mj/submit/describe"
            url = images[0].url
            if self._flavor.name == mj.TRUEAI and url.startswith(("http://", "https://")) and not images[0].object_key:
                body = {"link": url, **state}
            else:
                body = {"base64": await self._inputs.data_url(images[0]), **state}
        else:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"Midjourney cannot do {gen.GenerationKind.Name(kind)}")

        task_id = await self._submit(prefix + path, body)
        progress.upstream(task_id)
        await progress(0.0)  # records the task id now, so a cancel can reach it
        try:
            task = await self._wait(prefix, task_id, progress, generation.eta_seconds)
        except ProviderError as exc:
            if exc.code is ErrorCode.TIMEOUT and self._flavor.can_cancel:
                with contextlib.suppress(ProviderError):
                    await self.cancel(task_id)  # abandoned here: stop paying for it upstream
            raise
        if kind == gen.GENERATION_KIND_DESCRIBE:
            descriptions = mj.descriptions_of(task)
            if not descriptions:
                raise ProviderError(
                    ErrorCode.PROVIDER_ERROR, "Midjourney described the image with no prompts", retryable=True
                )
            return ProviderResult([], descriptions=descriptions)
        image_url = task.get("imageUrl")
        if not image_url:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "Midjourney finished without an image", retryable=True)
        data = await self._up.download(image_url, self._settings.download_max_bytes)
        # The grid (or upscale) keeps Midjourney's own pixel size: it is the product.
        image = await deliver(data, generation, self.name, exact_size=False)
        return ProviderResult([image], buttons=mj.buttons_of(task, self._flavor))

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
        if self._parents is None:
            raise ProviderError(ErrorCode.INTERNAL, "STATUS_ADDR is not set: the worker cannot read parent generations")
        parent = await self._parents(parent_id)
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

    async def _submit(self, path: str, body: dict) -> str:
        """POST a submit; a full queue (code 23) is retried like a 429, within the retry budget."""
        policy = self._settings.retry_policy()
        deadline = time.monotonic() + policy.budget_seconds
        attempt = 0
        while True:
            resp = await self._up.request("POST", path, json=body)
            try:
                return mj.submitted_task_id(_json(resp))
            except mj.QueueFull:
                attempt += 1
                wait = policy.backoff(attempt)
                if time.monotonic() + wait > deadline:
                    raise
                log.info("midjourney queue full, retrying", attempt=attempt, wait_s=round(wait, 2))
                await asyncio.sleep(wait)

    async def _wait(self, prefix: str, task_id: str, progress: Progress, eta: float = 0) -> dict:
        clock = PollClock(self.name, self._settings, eta_seconds=eta)
        missing, reported = 0, 0.0
        while True:
            await clock.wait()
            task = _json(await self._up.request("GET", f"{prefix}/mj/task/{task_id}/fetch"))
            if not isinstance(task, dict) or not task:
                missing += 1  # novicezk: empty 200; trueai: 204
                if missing >= MISSING_TOLERANCE:
                    raise ProviderError(
                        ErrorCode.PROVIDER_ERROR, f"the Midjourney proxy lost task {task_id}", retryable=True
                    )
                continue
            missing = 0
            status = task.get("status")
            if status == "SUCCESS":
                await progress(100.0)
                return task
            if status not in mj.RUNNING_STATES:
                if status in ("FAILURE", "CANCEL", "MODAL"):
                    raise mj.failure_of(task)
                log.warning("unknown midjourney task status", status=str(status)[:40], task_id=task_id)
            percent = percent_of(task.get("progress"))
            if percent is not None and percent != reported and percent < 100:
                reported = percent
                await progress(percent)

    async def cancel(self, upstream_id: str) -> None:
        if not self._flavor.can_cancel:
            log.info("novicezk's Midjourney proxy has no cancel; the task runs out upstream", task_id=upstream_id)
            return
        await self._up.request("POST", f"/mj/task/{upstream_id}/cancel")


def _json(response: httpx.Response) -> object:
    if not response.content.strip():
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise ProviderError(
            ErrorCode.PROVIDER_ERROR, "the Midjourney proxy answered something that is not JSON", retryable=True
        ) from exc
