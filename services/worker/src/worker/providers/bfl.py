"""Black Forest Labs (FLUX): POST /v1/<model> with `x-key`, then GET the returned
`polling_url` exactly (it points at the region that took the job) until one of the six
poll states ends it; the `result.sample` URL expires after 10 minutes, so it is
downloaded at once. One task makes one image: n images are n tasks, polled together.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from fractions import Fraction

import httpx
from pydantic import Field

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit import formats
from svckit.errors import ErrorCode
from svckit.logging import get_logger
from svckit.settings import load_settings
from worker.providers.base import Progress, Provider, ProviderError, ProviderResult
from worker.providers.detail import response_detail
from worker.providers.input_images import InputImages, InputUpstreamSettings, images_of
from worker.providers.polling import POLL_CONNECTIONS, Fanout, PollClock, percent_of, run_all
from worker.providers.sizing import aspect_ratio, deliver, fit
from worker.providers.upstream import Upstream

log = get_logger(__name__)


class BflSettings(InputUpstreamSettings):
    api_key: str = Field(validation_alias="BFL_API_KEY", min_length=1)
    base_url: str = Field("https://api.bfl.ai", validation_alias="BFL_BASE_URL")
    # 0 (strictest) .. 6; BFL's default is 2 (and 2 is the most it allows with input images).
    safety_tolerance: int = Field(2, validation_alias="BFL_SAFETY_TOLERANCE", ge=0, le=6)
    storage_addr: str = Field("", validation_alias="STORAGE_ADDR")


@dataclass(frozen=True)
class BflModel:
    endpoint: str  # POST /v1/<endpoint>
    # "pixels": width/height (256-1440, multiples of 32); "aspect": aspect_ratio only.
    sizing: str
    image_input: bool = False


# Catalog model id -> BFL endpoint.
MODELS: dict[str, BflModel] = {
    "flux-1.1-pro": BflModel("flux-pro-1.1", "pixels"),
    "flux-pro": BflModel("flux-pro", "pixels"),
    "flux-dev": BflModel("flux-dev", "pixels"),
    "flux-1.1-pro-ultra": BflModel("flux-pro-1.1-ultra", "aspect"),
    "flux-kontext-pro": BflModel("flux-kontext-pro", "aspect", image_input=True),
    "flux-kontext-max": BflModel("flux-kontext-max", "aspect", image_input=True),
}
WIDEST = Fraction(21, 9)  # aspect ratios from 21:9 to 9:21
PENDING = "Pending"
READY = "Ready"
MODERATED = {"Request Moderated": "the prompt or input image", "Content Moderated": "the generated image"}
FAILED = "Error"
NOT_FOUND = "Task not found"


def request_body(generation: gen.Generation, model: BflModel, safety_tolerance: int, input_image: str = "") -> dict:
    """The JSON of POST /v1/<model> for one image (seed of the first; callers vary it)."""
    params = generation.params
    if params.negative_prompt:
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} on bfl takes no negative_prompt")
    kind = params.kind or gen.GENERATION_KIND_GENERATE
    if kind not in (gen.GENERATION_KIND_GENERATE, gen.GENERATION_KIND_EDIT):
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"bfl cannot do {gen.GenerationKind.Name(kind)}")
    if kind == gen.GENERATION_KIND_EDIT and not (model.image_input and input_image):
        raise ProviderError(
            ErrorCode.INVALID_REQUEST, f"{generation.model} on bfl edits no images; flux-kontext-pro does"
        )
    wants = formats.of(generation.output_format).name
    body: dict = {
        "prompt": params.prompt,
        "seed": generation.seed,
        "safety_tolerance": min(safety_tolerance, 2) if input_image else safety_tolerance,
        # Lossless when the client wants png or webp (converted here); jpeg passes through.
        "output_format": "jpeg" if wants == "jpeg" else "png",
    }
    if model.sizing == "pixels":
        body["width"], body["height"] = fit(generation.width, generation.height, lo=256, hi=1440, step=32)
    else:
        body["aspect_ratio"] = aspect_ratio(generation.width, generation.height, widest=WIDEST)
    if input_image:
        body["input_image"] = input_image
    return body


class BflProvider(Provider):
    name = "bfl"

    def __init__(self, settings: BflSettings) -> None:
        self._settings = settings
        self._up = Upstream(
            self.name,
            settings.base_url,
            headers={"x-key": settings.api_key},
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
        self._base_host = httpx.URL(settings.base_url).host

    @classmethod
    def from_env(cls) -> BflProvider:
        return cls(load_settings(BflSettings))

    async def close(self) -> None:
        await self._inputs.close()
        await self._up.close()

    def _classify(self, response: httpx.Response) -> ProviderError | None:
        if response.status_code == 422:  # FastAPI validation: {"detail": [{"loc", "msg"}]}
            return ProviderError(
                ErrorCode.INVALID_REQUEST, f"bfl rejected the request: {self._up.scrub(response_detail(response))}"
            )
        if response.status_code == 402:
            return ProviderError(
                ErrorCode.PROVIDER_AUTH, "bfl: the gateway's account is out of credits (HTTP 402)", retryable=True
            )
        return None

    async def generate(self, generation: gen.Generation, progress: Progress) -> ProviderResult:
        model = MODELS.get(generation.model)
        if model is None:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, f"bfl does not serve {generation.model}", retryable=True)
        inputs = images_of(generation) if model.image_input else []
        if len(inputs) > 1:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} takes one input image")
        # BFL fetches http(s) URLs itself; stored images go as base64.
        image = ""
        if inputs:
            image = (
                inputs[0].url
                if inputs[0].url.startswith(("http://", "https://")) and not inputs[0].object_key
                else await self._inputs.b64(inputs[0])
            )
        body = request_body(generation, model, self._settings.safety_tolerance, image)
        n = generation.params.n or 1
        fan = Fanout(progress, n)

        def job(index: int):
            # Same seed, same image: each of the n tasks gets its own.
            return lambda: self._run_task(
                model, {**body, "seed": (generation.seed + index) % 2**32}, index, fan, generation.eta_seconds
            )

        samples = await run_all([job(i) for i in range(n)])
        images = [await deliver(data, generation, self.name) for data in samples]
        return ProviderResult(images)

    async def _run_task(self, model: BflModel, body: dict, index: int, fan: Fanout, eta: float = 0) -> bytes:
        submitted = (await self._up.request("POST", f"/v1/{model.endpoint}", json=body)).json()
        task_id, polling_url = submitted.get("id"), submitted.get("polling_url")
        if not task_id or not polling_url:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, "bfl accepted the job without an id or polling_url", retryable=True
            )
        if not self._trusted(polling_url):
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, "bfl returned a polling_url on a foreign host", retryable=True
            )
        await fan.upstream(index, task_id)
        clock = PollClock(self.name, self._settings, eta_seconds=eta)
        warned = False
        while True:
            await clock.wait()
            result = (await self._up.request("GET", polling_url)).json()
            status = result.get("status")
            if status == READY:
                sample = (result.get("result") or {}).get("sample")
                if not sample:
                    raise ProviderError(
                        ErrorCode.PROVIDER_ERROR, "bfl finished without a result sample", retryable=True
                    )
                data = await self._up.download(sample, self._settings.download_max_bytes)
                await fan.report(index, 100.0)
                return data
            if status in MODERATED:
                raise ProviderError(
                    ErrorCode.CONTENT_POLICY_VIOLATION,
                    f"bfl's moderation flagged {MODERATED[status]} ({status}){_details(result)}",
                )
            if status == FAILED:
                raise ProviderError(
                    ErrorCode.PROVIDER_ERROR, f"bfl failed to generate the image{_details(result)}", retryable=True
                )
            if status == NOT_FOUND:
                raise ProviderError(
                    ErrorCode.PROVIDER_ERROR, f"bfl no longer knows task {task_id} (unknown or expired)", retryable=True
                )
            if status != PENDING and not warned:
                warned = True  # a state newer than the contract: keep polling until the timeout
                log.warning("unknown bfl task status", status=str(status)[:40], task_id=task_id)
            if (percent := percent_of(result.get("progress"))) is not None:
                await fan.report(index, min(percent, 99.0))

    def _trusted(self, url: str) -> bool:
        """The x-key goes only to the configured host or its sibling regions (api.eu.bfl.ai)."""
        host = httpx.URL(url).host
        if host == self._base_host:
            return True
        try:
            ipaddress.ip_address(self._base_host)
            return False
        except ValueError:
            pass
        parent = self._base_host.split(".", 1)[1] if self._base_host.count(".") >= 2 else self._base_host
        return host.endswith("." + parent)


def _details(result: dict) -> str:
    details = result.get("details")
    if not details:
        return ""
    if isinstance(details, dict):
        text = "; ".join(f"{k}: {v}" for k, v in details.items())
    else:
        text = str(details)
    return f": {' '.join(text.split())[:200]}"
