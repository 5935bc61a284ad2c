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
from pydantic import Field, SecretStr

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit import formats
from svckit.errors import ErrorCode
from svckit.logging import get_logger
from worker.providers.adapter import Context
from worker.providers.base import ProviderError, ProviderResult
from worker.providers.detail import response_detail
from worker.providers.images import deliver
from worker.providers.input_images import images_of, is_client_url
from worker.providers.polling import Poll, PollingProvider, Task, percent_of
from worker.providers.settings import UpstreamSettings
from worker.providers.shaping import aspect_ratio, fit

log = get_logger(__name__)


class BflSettings(UpstreamSettings):
    api_key: SecretStr = Field(validation_alias="BFL_API_KEY", min_length=1)
    base_url: str = Field("https://api.bfl.ai", validation_alias="BFL_BASE_URL")
    # 0 (strictest) .. 6; BFL's default is 2 (and 2 is the most it allows with input images).
    safety_tolerance: int = Field(2, validation_alias="BFL_SAFETY_TOLERANCE", ge=0, le=6)


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


class BflProvider(PollingProvider):
    name = "bfl"
    settings_type = BflSettings
    settings: BflSettings

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self._base_host = httpx.URL(self.settings.base_url).host

    @staticmethod
    def headers(settings: BflSettings) -> dict[str, str]:
        return {"x-key": settings.api_key.get_secret_value()}

    @staticmethod
    def classify(response: httpx.Response) -> ProviderError | None:
        if response.status_code == 422:  # FastAPI validation: {"detail": [{"loc", "msg"}]}
            return ProviderError(ErrorCode.INVALID_REQUEST, f"bfl rejected the request: {response_detail(response)}")
        if response.status_code == 402:
            return ProviderError(
                ErrorCode.PROVIDER_AUTH, "bfl: the gateway's account is out of credits (HTTP 402)", retryable=True
            )
        return None

    async def requests(self, generation: gen.Generation) -> list[tuple[BflModel, dict]]:
        model = MODELS.get(generation.model)
        if model is None:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, f"bfl does not serve {generation.model}", retryable=True)
        inputs = images_of(generation) if model.image_input else []
        if len(inputs) > 1:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} takes one input image")
        # BFL fetches http(s) URLs itself; stored images go as base64.
        image = ""
        if inputs:
            image = inputs[0].url if is_client_url(inputs[0]) else await self.inputs.b64(inputs[0])
        body = request_body(generation, model, self.settings.safety_tolerance, image)
        # Same seed, same image: each of the n tasks gets its own.
        return [(model, {**body, "seed": (generation.seed + i) % 2**32}) for i in range(generation.params.n or 1)]

    async def submit(self, request: tuple[BflModel, dict]) -> Task:
        model, body = request
        submitted = (await self.http.request("POST", f"/v1/{model.endpoint}", json=body)).json()
        task_id, polling_url = submitted.get("id"), submitted.get("polling_url")
        if not task_id or not polling_url:
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, "bfl accepted the job without an id or polling_url", retryable=True
            )
        if not self._trusted(polling_url):
            raise ProviderError(
                ErrorCode.PROVIDER_ERROR, "bfl returned a polling_url on a foreign host", retryable=True
            )
        return Task(task_id, {"polling_url": polling_url})

    async def poll(self, task: Task) -> Poll:
        result = (await self.http.request("GET", task.state["polling_url"])).json()
        status = result.get("status")
        if status == READY:
            task.state["result"] = result
            return Poll(done=True)
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
                ErrorCode.PROVIDER_ERROR, f"bfl no longer knows task {task.id} (unknown or expired)", retryable=True
            )
        if status != PENDING and not task.state.get("warned"):
            task.state["warned"] = True  # a state newer than the contract: keep polling until the timeout
            log.warning("unknown bfl task status", status=str(status)[:40], task_id=task.id)
        return Poll(percent=percent_of(result.get("progress")))

    async def fetch(self, task: Task) -> bytes:
        sample = (task.state["result"].get("result") or {}).get("sample")
        if not sample:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "bfl finished without a result sample", retryable=True)
        return await self.http.download(sample, self.settings.download_max_bytes)

    async def collect(self, generation: gen.Generation, outputs: list[bytes]) -> ProviderResult:
        return ProviderResult([await deliver(data, generation, self.name, exact_size=True) for data in outputs])

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
