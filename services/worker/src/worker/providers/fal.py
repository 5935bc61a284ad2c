"""fal.ai queue: POST https://queue.fal.run/{model}[/{subpath}] with `Authorization: Key`,
then the returned status_url (IN_QUEUE -> IN_PROGRESS -> COMPLETED) and response_url;
status, result and cancel live under {owner}/{alias} without the sub-path, so the URLs
the submit returns are used as given. A failed request still reaches COMPLETED: its
failure is the non-2xx answer of response_url. `has_nsfw_concepts` flags refusals.
Cancel (PUT cancel_url) only stops a request still in the queue.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import httpx
from pydantic import Field, SecretStr

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit import formats
from svckit.errors import ErrorCode
from svckit.logging import get_logger
from worker.providers.adapter import Context, JobClock
from worker.providers.base import Progress, ProviderError, ProviderResult
from worker.providers.detail import response_detail
from worker.providers.images import decode_b64, deliver
from worker.providers.input_images import images_of
from worker.providers.options import provider_options
from worker.providers.polling import Poll, PollingProvider, Task, percent_of
from worker.providers.settings import UpstreamSettings
from worker.providers.shaping import nearest_ratio
from worker.providers.upstream import RETRYABLE_STATUSES, retry_after_seconds

log = get_logger(__name__)
KONTEXT_RATIOS = ["21:9", "16:9", "4:3", "3:2", "1:1", "2:3", "3:4", "9:16", "9:21"]
_INGRESS_STATUSES = frozenset({502, 503, 504})


class FalSettings(UpstreamSettings):
    api_key: SecretStr = Field(validation_alias="FAL_KEY", min_length=1)
    base_url: str = Field("https://queue.fal.run", validation_alias="FAL_BASE_URL")


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
    body.update(provider_options(generation))
    if "safety_tolerance" in body:
        body["safety_tolerance"] = str(body["safety_tolerance"])  # fal's enum is "1".."6"
    return body


def image_urls(result: dict, n: int) -> list[str]:
    """The result's image URLs; a flagged image (has_nsfw_concepts) refuses the generation."""
    flagged = [i for i, nsfw in enumerate(result.get("has_nsfw_concepts") or []) if nsfw]
    if flagged:
        raise ProviderError(
            ErrorCode.CONTENT_POLICY_VIOLATION, f"fal's safety checker flagged {len(flagged)} of {n} images"
        )
    urls = [url for i in result.get("images") or [] if isinstance(i, dict) and (url := i.get("url"))]
    if len(urls) < n:
        raise ProviderError(ErrorCode.PROVIDER_ERROR, f"fal returned {len(urls)} of {n} images", retryable=True)
    return urls[:n]


class FalProvider(PollingProvider):
    name = "fal"
    settings_type = FalSettings
    settings: FalSettings

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self._host = httpx.URL(self.settings.base_url).host
        self._cancel_urls: dict[str, str] = {}  # request id -> cancel_url, while it runs here

    @staticmethod
    def headers(settings: FalSettings) -> dict[str, str]:
        return {"Authorization": f"Key {settings.api_key.get_secret_value()}"}

    @staticmethod
    def classify(response: httpx.Response) -> ProviderError | None:
        if response.status_code == 422:  # {"detail": [{"loc", "msg", "type"}]} or a string
            return ProviderError(ErrorCode.INVALID_REQUEST, f"fal rejected the input: {response_detail(response)}")
        if response.status_code == 404:
            return ProviderError(
                ErrorCode.PROVIDER_ERROR, f"fal does not know this model: {response_detail(response)}", retryable=True
            )
        return None

    async def run(self, generation: gen.Generation, progress: Progress, clock: JobClock) -> ProviderResult:
        """A request's cancel URL is kept while it runs here: a cancel (its owner's, or at the
        timeout) needs it."""
        try:
            result = await super().run(generation, progress, clock)
        except ProviderError as exc:
            if exc.code is not ErrorCode.TIMEOUT:  # a timed-out request is cancelled next
                self._cancel_urls.pop(progress.upstream_id, None)
            raise
        self._cancel_urls.pop(progress.upstream_id, None)
        return result

    async def requests(self, generation: gen.Generation) -> list[tuple[str, dict]]:
        model = MODELS.get(generation.model)
        if model is None:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, f"fal does not serve {generation.model}", retryable=True)
        inputs = images_of(generation) if model.image_input else []
        if len(inputs) > 1:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} takes one input image")
        image = await self.inputs.url_or_data_url(inputs[0]) if inputs else ""
        return [(model.submit_path(bool(image)), model_input(generation, model, image))]

    async def submit(self, request: tuple[str, dict]) -> Task:
        path, body = request
        queued = (await self.http.request("POST", path, json=body)).json()
        request_id = queued.get("request_id")
        urls = {k: queued.get(k) for k in ("status_url", "response_url", "cancel_url")}
        if not request_id or not all(urls.values()):
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "fal queued the request without its URLs", retryable=True)
        if any(httpx.URL(u).host != self._host for u in urls.values()):
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "fal returned request URLs on a foreign host", retryable=True)
        self._cancel_urls[request_id] = urls["cancel_url"]
        return Task(request_id, urls)

    async def poll(self, task: Task) -> Poll:
        url = httpx.URL(task.state["status_url"]).copy_merge_params({"logs": "1"})
        status = (await self.http.request("GET", str(url))).json()
        state = status.get("status")
        if state == "COMPLETED":
            return Poll(done=True)
        if state not in ("IN_QUEUE", "IN_PROGRESS"):
            log.warning("unknown fal request status", status=str(state)[:40])
        logs = " ".join(str(line.get("message", "")) for line in status.get("logs") or [] if isinstance(line, dict))
        return Poll(percent=percent_of(logs))

    async def fetch(self, task: Task) -> dict:
        """GET response_url. A non-2xx answer is the request's own failure; only 429 and the
        ingress's 502-504 (no x-fal-request-id) are transient, as in fal's own clients."""
        retry = self.http.retry
        deadline = time.monotonic() + retry.budget_seconds
        attempt = 0
        while True:
            try:
                resp = await self.http.client.get(task.state["response_url"])
            except httpx.TransportError as exc:
                transient: ProviderError = ProviderError(
                    ErrorCode.PROVIDER_UNAVAILABLE, f"fal is unreachable ({type(exc).__name__})", retryable=True
                )
                wait = retry.backoff(attempt)
            else:
                if resp.is_success:
                    return resp.json()
                if not (
                    resp.status_code == 429
                    or resp.status_code in _INGRESS_STATUSES
                    and "x-fal-request-id" not in resp.headers
                ):
                    raise self._failure(resp)
                transient = self.http.error_of(resp)
                hinted = retry_after_seconds(resp)
                wait = hinted if hinted is not None else retry.backoff(attempt)
            attempt += 1
            if attempt >= retry.max_attempts or time.monotonic() + wait > deadline:
                raise transient
            await asyncio.sleep(wait)

    async def collect(self, generation: gen.Generation, outputs: list[dict]) -> ProviderResult:
        images = []
        for url in image_urls(outputs[0], generation.params.n or 1):
            data = (
                decode_b64(url, self.name)
                if url.startswith("data:")
                else await self.http.download(url, self.settings.download_max_bytes)
            )
            images.append(await deliver(data, generation, self.name, exact_size=True))
        return ProviderResult(images)

    def _failure(self, resp: httpx.Response) -> ProviderError:
        detail = self.http.scrub(response_detail(resp))
        if resp.status_code in (400, 422):
            return ProviderError(ErrorCode.INVALID_REQUEST, f"fal could not run the request: {detail}")
        if resp.status_code in (401, 403) or resp.status_code not in RETRYABLE_STATUSES:
            return self.http.error_of(resp)
        return ProviderError(ErrorCode.PROVIDER_ERROR, f"fal's model failed: {detail}", retryable=True)

    async def cancel(self, upstream_id: str) -> None:
        url = self._cancel_urls.pop(upstream_id, None)
        if url is None:
            log.info("no cancel URL known for this fal request", request_id=upstream_id)
            return
        try:
            await self.http.request("PUT", url)
        except ProviderError as exc:  # 400: already running or done, fal cannot stop it
            log.info("fal did not cancel the request", request_id=upstream_id, error=exc.message)
