"""AUTOMATIC1111 / Forge `sdapi` (docs/provider-contracts-2.md §13b), started with `--api`.

`SDAPI_BASE_URL` is the server (`http://gpu-1:7860`); `SDAPI_API_KEY`, when the server runs
with `--api-auth user:pass`, is that `user:pass` (HTTP Basic). `SDAPI_MODELS` (JSON) says,
per catalog model, the `checkpoint` to run (its title, sent as
`override_settings.sd_model_checkpoint`; null: whatever is loaded) and `extra` fields sent
as they are (steps, cfg_scale, sampler_name, scheduler, denoising_strength, hires fix, ...):

    {"sdxl-selfhosted": {"checkpoint": "sd_xl_base_1.0.safetensors [31e35c80fc]",
                         "extra": {"steps": 30, "cfg_scale": 7, "sampler_name": "DPM++ 2M"}}}

A generation is one synchronous `POST /sdapi/v1/txt2img` (or `img2img` with the input image
as `init_images`, and a mask when given). The server runs one job at a time and reports
only the running job's progress, so this worker sends one at a time too (the others wait
here, where a cancel drops them unsent) and polls `GET /sdapi/v1/progress` while its call
runs. A cancelled call interrupts the server's job (`POST /sdapi/v1/interrupt`) before the
next one is sent. The answer's `images`
are base64; `info` (a JSON string) says where the batch starts (a grid may come first).
Errors: `{"error": "<exception>", "detail", "body", "errors"}` with the exception's status,
FastAPI's 422 `{"detail": [...]}`; 401 is a wrong `--api-auth` login. No moderation.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from svckit.logging import get_logger
from worker.providers.adapter import Context, JobClock, Provider
from worker.providers.base import Progress, ProviderError, ProviderResult
from worker.providers.detail import response_detail
from worker.providers.images import decode_b64, deliver
from worker.providers.options import provider_options
from worker.providers.polling import percent_of
from worker.providers.settings import UpstreamSettings

log = get_logger(__name__)
MAX_SEED = 2**32 - 1  # A1111 seeds are 32-bit; -1 means random


class ServedCheckpoint(BaseModel):
    """How one catalog model is run on the server."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    checkpoint: str | None = None
    extra: dict[str, Any] = {}


class SdapiSettings(UpstreamSettings):
    base_url: str = Field(validation_alias="SDAPI_BASE_URL", min_length=1)
    # `user:pass` of a server started with --api-auth (HTTP Basic); empty: no auth.
    api_key: SecretStr = Field(SecretStr(""), validation_alias="SDAPI_API_KEY")
    # Catalog model id -> checkpoint and extra fields (JSON object).
    models: dict[str, ServedCheckpoint] = Field(validation_alias="SDAPI_MODELS", min_length=1)


def request_body(generation: gen.Generation, served: ServedCheckpoint, init_images: list[str], mask: str) -> dict:
    p = generation.params
    body: dict[str, Any] = {
        "prompt": p.prompt,
        "negative_prompt": p.negative_prompt,
        "seed": generation.seed % (MAX_SEED + 1),
        "width": generation.width,
        "height": generation.height,
        "batch_size": p.n or 1,
        "n_iter": 1,
        "send_images": True,
        "save_images": False,
        "force_task_id": f"pixelmesh-{generation.id}",
    }
    if served.checkpoint:
        body["override_settings"] = {"sd_model_checkpoint": served.checkpoint}
    body.update(served.extra)
    body.update(provider_options(generation))
    if init_images:
        body["init_images"] = init_images
        if mask:
            body["mask"] = mask
    return body


def exception_message(response: httpx.Response) -> str:
    """A1111's wrapped exception (`{"error": class, "detail", "errors"}`) in one line, or FastAPI's detail."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "errors" in body and isinstance(body.get("error"), str):
        said = [str(body.get(k) or "") for k in ("detail", "errors")]
        return " ".join(f"{body['error']}: {'; '.join(s for s in said if s) or 'no message'}".split())[:300]
    return response_detail(response)


class SdapiProvider(Provider):
    name = "sdapi"
    settings_type = SdapiSettings
    settings: SdapiSettings

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self._turn = asyncio.Semaphore(1)  # the server runs one job at a time; so do we
        self._running = ""  # the task id of the call the server runs now

    @staticmethod
    def headers(settings: SdapiSettings) -> dict[str, str]:
        login = settings.api_key.get_secret_value()
        return {"Authorization": "Basic " + base64.b64encode(login.encode()).decode()} if login else {}

    @classmethod
    def limits(cls, settings: SdapiSettings) -> tuple[float, int]:
        """The call is the whole generation (and may wait for the server's lock): the job's time."""
        return max(settings.request_timeout_seconds, settings.job_timeout_seconds), 4

    @staticmethod
    def classify(response: httpx.Response) -> ProviderError | None:
        if response.status_code in (404, 422):
            # The catalog checked the request: a sampler, script or field the server refuses is
            # the operator's SDAPI_MODELS (or this server's version); another route may serve it.
            return ProviderError(
                ErrorCode.PROVIDER_ERROR, f"sdapi refused the request: {exception_message(response)}", retryable=True
            )
        if response.status_code >= 500:
            return ProviderError(
                ErrorCode.PROVIDER_UNAVAILABLE,
                f"sdapi failed (HTTP {response.status_code}): {exception_message(response)}",
                retryable=True,
            )
        return None

    async def run(self, generation: gen.Generation, progress: Progress, clock: JobClock) -> ProviderResult:
        served = self.settings.models.get(generation.model)
        if served is None:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, f"sdapi is not configured to serve {generation.model}", retryable=True
            )
        inputs = await self.inputs.load(generation)
        images = [i for i in inputs if i.role != "mask"]
        masks = [i for i in inputs if i.role == "mask"]
        if len(images) > 1:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} takes one input image")
        init = [base64.b64encode(i.data).decode() for i in images]
        mask = base64.b64encode(masks[0].data).decode() if masks and init else ""
        body = request_body(generation, served, init, mask)
        path = "/sdapi/v1/img2img" if init else "/sdapi/v1/txt2img"
        async with self._turn:
            self._running = body["force_task_id"]
            progress.upstream(self._running)
            watcher = asyncio.create_task(self._watch(progress, clock))
            try:
                answer = await self.http.request("POST", path, json=body)
            except asyncio.CancelledError:
                # Cancelled (its owner, the job's timeout, a shutdown): stop the server's job
                # while it is still this one, before the next job's call may start.
                await self.cancel(self._running)
                raise
            finally:
                self._running = ""
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
        return await self._collect(generation, answer)

    async def _watch(self, progress: Progress, clock: JobClock) -> None:
        """The server's progress (its running job is this one) while the call runs."""
        reported = 0.0
        while True:
            await clock.wait()
            try:
                state = (
                    await self.http.request("GET", "/sdapi/v1/progress", params={"skip_current_image": "true"})
                ).json()
            except (ProviderError, ValueError) as exc:
                log.info("sdapi progress unavailable", error=str(exc)[:200])
                continue
            percent = percent_of(state.get("progress")) if isinstance(state, dict) else None
            if percent is not None and percent > reported:
                reported = min(percent, 99.0)
                await progress(reported)

    async def _collect(self, generation: gen.Generation, answer: httpx.Response) -> ProviderResult:
        try:
            body = answer.json()
        except ValueError:
            body = None
        found = body.get("images") if isinstance(body, dict) else None
        if not isinstance(found, list):
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "sdapi answered without images", retryable=True)
        try:
            info = json.loads(body.get("info") or "{}")
        except (TypeError, ValueError):
            info = {}
        first = info.get("index_of_first_image", 0) if isinstance(info, dict) else 0
        wanted = generation.params.n or 1
        batch = found[first if isinstance(first, int) else 0 :][:wanted]
        if len(batch) < wanted:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, f"sdapi made {len(batch)} of {wanted} images", retryable=True)
        images = [await deliver(decode_b64(str(b), self.name), generation, self.name, exact_size=True) for b in batch]
        return ProviderResult(images)

    async def cancel(self, upstream_id: str) -> None:
        """Interrupt the server's job when it is this one (a waiting job was never sent)."""
        if upstream_id != self._running:
            log.info("sdapi job not running here, nothing to interrupt", task_id=upstream_id)
            return
        try:
            await self.http.request("POST", "/sdapi/v1/interrupt")
        except ProviderError as exc:
            log.info("sdapi did not take the interrupt", task_id=upstream_id, error=exc.message)
