"""fal.ai queue: POST https://queue.fal.run/{model}[/{subpath}] with `Authorization: Key`,
then the returned status_url (IN_QUEUE -> IN_PROGRESS -> COMPLETED) and response_url;
status, result and cancel live under {owner}/{alias} without the sub-path, so the URLs
the submit returns are used as given. A failed request still reaches COMPLETED: its
failure is the non-2xx answer of response_url. `has_nsfw_concepts` flags refusals.
Cancel (PUT cancel_url) only stops a request still in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import httpx
from pydantic import Field

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit import formats
from svckit.errors import ErrorCode
from svckit.logging import get_logger
from svckit.settings import load_settings
from worker.providers.base import Progress, Provider, ProviderError, ProviderResult
from worker.providers.detail import response_detail
from worker.providers.images import decode_b64
from worker.providers.input_images import InputImages, InputUpstreamSettings, images_of
from worker.providers.polling import POLL_CONNECTIONS, PollClock, percent_of
from worker.providers.sizing import deliver, nearest_ratio
from worker.providers.upstream import RETRYABLE_STATUSES, Upstream, retry_after_seconds

log = get_logger(__name__)
KONTEXT_RATIOS = ["21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21"]
_INGRESS_STATUSES = frozenset({502, 503, 504})


class FalSettings(InputUpstreamSettings):
    api_key: str = Field(validation_alias="FAL_KEY", min_length=1)
    base_url: str = Field("https://queue.fal.run", validation_alias="FAL_BASE_URL")
    storage_addr: str = Field("", validation_alias="STORAGE_ADDR")


@dataclass(frozen=True)
class FalModel:
    endpoint: str  # model id with its sub-path, as submitted
    sizing: str = "image_size"  # {"width", "height"}; or "ratio": aspect_ratio from KONTEXT_RATIOS
    format_field: str = "output_format"
    image_input: str = ""  # the input naming the image to edit
    text_endpoint: str = ""  # the endpoint without an input image (kontext text-to-image)
    negative_prompt: bool = False
    safety_tolerance: bool = False  # "1".."6", a string on fal

    def submit_path(self, with_image: bool) -> str:
        return "/" + (self.endpoint if with_image or not self.text_endpoint else self.text_endpoint)


MODELS: dict[str, FalModel] = {
    "flux-1.1-pro": FalModel("fal-ai/flux-pro/v1.1", safety_tolerance=True),
    "flux-pro": FalModel("fal-ai/flux-pro/new", safety_tolerance=True),
    "flux-dev": FalModel("fal-ai/flux/dev"),
    "flux-kontext-pro": FalModel(
        "fal-ai/flux-pro/kontext",
        "ratio",
        image_input="image_url",
        text_endpoint="fal-ai/flux-pro/kontext/text-to-image",
        safety_tolerance=True,
    ),
    "stable-diffusion-xl": FalModel("fal-ai/fast-sdxl", format_field="format", negative_prompt=True),
}


def model_input(generation: gen.Generation, model: FalModel, image: str = "") -> dict:
    params = generation.params
    kind = params.kind or gen.GENERATION_KIND_GENERATE
    if kind not in (gen.GENERATION_KIND_GENERATE, gen.GENERATION_KIND_EDIT):
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"fal cannot do {gen.GenerationKind.Name(kind)}")
    if kind == gen.GENERATION_KIND_EDIT and not (model.image_input and image):
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} on fal edits no images")
    if params.negative_prompt and not model.negative_prompt:
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} on fal takes no negative_prompt")
    wants = formats.of(generation.output_format).name
    body: dict = {
        "prompt": params.prompt,
        "seed": generation.seed,
        "num_images": params.n or 1,
        model.format_field: "jpeg" if wants == "jpeg" else "png",
        "enable_safety_checker": True,
    }
    if model.sizing == "ratio":
        body["aspect_ratio"] = nearest_ratio(generation.width, generation.height, KONTEXT_RATIOS)
        del body["enable_safety_checker"]
    else:
        body["image_size"] = {"width": generation.width, "height": generation.height}
    if model.safety_tolerance:
        body["safety_tolerance"] = "2"
    if params.negative_prompt:
        body["negative_prompt"] = params.negative_prompt
    if image:
        body[model.image_input] = image
    return body


def image_urls(result: dict, n: int) -> list[str]:
    """The result's image URLs; a flagged image (has_nsfw_concepts) refuses the generation."""
    flagged = [i for i, nsfw in enumerate(result.get("has_nsfw_concepts") or []) if nsfw]
    if flagged:
        raise ProviderError(
            ErrorCode.CONTENT_POLICY_VIOLATION, f"fal's safety checker flagged {len(flagged)} of {n} images"
        )
    urls = [i.get("url") for i in result.get("images") or [] if isinstance(i, dict) and i.get("url")]
    if len(urls) < n:
        raise ProviderError(ErrorCode.PROVIDER_ERROR, f"fal returned {len(urls)} of {n} images", retryable=True)
    return urls[:n]


class FalProvider(Provider):
    name = "fal"

    def __init__(self, settings: FalSettings) -> None:
        self._settings = settings
        self._retry = settings.retry_policy()
        self._up = Upstream(
            self.name,
            settings.base_url,
            headers={"Authorization": f"Key {settings.api_key}"},
            secret=settings.api_key,
            retry=self._retry,
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
        self._host = httpx.URL(settings.base_url).host
        self._cancel_urls: dict[str, str] = {}  # request id -> cancel_url, while it runs here

    @classmethod
    def from_env(cls) -> FalProvider:
        return cls(load_settings(FalSettings))

    async def close(self) -> None:
        await self._inputs.close()
        await self._up.close()

    def _classify(self, response: httpx.Response) -> ProviderError | None:
        if response.status_code == 422:  # {"detail": [{"loc", "msg", "type"}]} or a string
            return ProviderError(
                ErrorCode.INVALID_REQUEST, f"fal rejected the input: {self._up.scrub(response_detail(response))}"
            )
        if response.status_code == 404:
            return ProviderError(
                ErrorCode.PROVIDER_ERROR, f"fal does not know this model: {response_detail(response)}", retryable=True
            )
        return None

    async def generate(self, generation: gen.Generation, progress: Progress) -> ProviderResult:
        model = MODELS.get(generation.model)
        if model is None:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, f"fal does not serve {generation.model}", retryable=True)
        inputs = images_of(generation) if model.image_input else []
        if len(inputs) > 1:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} takes one input image")
        image = await self._inputs.url_or_data_url(inputs[0]) if inputs else ""
        body = model_input(generation, model, image)
        queued = (await self._up.request("POST", model.submit_path(bool(image)), json=body)).json()
        request_id = queued.get("request_id")
        urls = {k: queued.get(k) for k in ("status_url", "response_url", "cancel_url")}
        if not request_id or not all(urls.values()):
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "fal queued the request without its URLs", retryable=True)
        if any(httpx.URL(u).host != self._host for u in urls.values()):
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "fal returned request URLs on a foreign host", retryable=True)
        self._cancel_urls[request_id] = urls["cancel_url"]
        progress.upstream(request_id)
        await progress(0.0)  # records the request id now, so a cancel can reach it
        try:
            await self._wait(urls["status_url"], progress, generation.eta_seconds)
            result = await self._result(urls["response_url"])
        except asyncio.CancelledError:
            raise  # cancelled by its owner: cancel() comes next and needs the cancel URL
        except ProviderError as exc:
            if exc.code is ErrorCode.TIMEOUT:
                with contextlib.suppress(ProviderError):
                    await self.cancel(request_id)
            self._cancel_urls.pop(request_id, None)
            raise
        self._cancel_urls.pop(request_id, None)
        images = []
        for url in image_urls(result, generation.params.n or 1):
            data = (
                decode_b64(url, self.name)
                if url.startswith("data:")
                else await self._up.download(url, self._settings.download_max_bytes)
            )
            images.append(await deliver(data, generation, self.name))
        await progress(100.0)
        return ProviderResult(images)

    async def _wait(self, status_url: str, progress: Progress, eta: float = 0) -> None:
        clock = PollClock(self.name, self._settings, eta_seconds=eta)
        url = httpx.URL(status_url).copy_merge_params({"logs": "1"})
        reported = 0.0
        while True:
            await clock.wait()
            status = (await self._up.request("GET", str(url))).json()
            state = status.get("status")
            if state == "COMPLETED":
                return
            if state not in ("IN_QUEUE", "IN_PROGRESS"):
                log.warning("unknown fal request status", status=str(state)[:40])
            logs = " ".join(str(line.get("message", "")) for line in status.get("logs") or [] if isinstance(line, dict))
            percent = percent_of(logs)
            if percent is not None and percent != reported:
                reported = percent
                await progress(min(percent, 99.0))

    async def _result(self, response_url: str) -> dict:
        """GET response_url. A non-2xx answer is the request's own failure; only 429 and the
        ingress's 502-504 (no x-fal-request-id) are transient, as in fal's own clients."""
        deadline = time.monotonic() + self._retry.budget_seconds
        attempt = 0
        while True:
            try:
                resp = await self._up.client.get(response_url)
            except httpx.TransportError as exc:
                transient: ProviderError = ProviderError(
                    ErrorCode.PROVIDER_UNAVAILABLE, f"fal is unreachable ({type(exc).__name__})", retryable=True
                )
                wait = self._retry.backoff(attempt)
            else:
                if resp.is_success:
                    return resp.json()
                if not (
                    resp.status_code == 429
                    or resp.status_code in _INGRESS_STATUSES
                    and "x-fal-request-id" not in resp.headers
                ):
                    raise self._failure(resp)
                transient = self._up.error_of(resp)
                hinted = retry_after_seconds(resp)
                wait = hinted if hinted is not None else self._retry.backoff(attempt)
            attempt += 1
            if attempt >= self._retry.max_attempts or time.monotonic() + wait > deadline:
                raise transient
            await asyncio.sleep(wait)

    def _failure(self, resp: httpx.Response) -> ProviderError:
        detail = self._up.scrub(response_detail(resp))
        if resp.status_code in (400, 422):
            return ProviderError(ErrorCode.INVALID_REQUEST, f"fal could not run the request: {detail}")
        if resp.status_code in (401, 403) or resp.status_code not in RETRYABLE_STATUSES:
            return self._up.error_of(resp)
        return ProviderError(ErrorCode.PROVIDER_ERROR, f"fal's model failed: {detail}", retryable=True)

    async def cancel(self, upstream_id: str) -> None:
        url = self._cancel_urls.pop(upstream_id, None)
        if url is None:
            log.info("no cancel URL known for this fal request", request_id=upstream_id)
            return
        try:
            await self._up.request("PUT", url)
        except ProviderError as exc:  # 400: already running or done, fal cannot stop it
            log.info("fal did not cancel the request", request_id=upstream_id, error=exc.message)
