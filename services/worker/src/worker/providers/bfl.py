"""Black Forest Labs (FLUX): POST /v1/<model> with `x-key`, then GET the returned
`polling_url` exactly (it points at the region that took the job) until one of the six
poll states ends it; the `result.sample` URL expires after 10 minutes, so it is
downloaded at once. One task makes one image: n images are n tasks, polled together.
FLUX.2 takes up to 8 reference images (input_image .. input_image_8) and any size in
multiples of 16 up to 4 MP; FLUX 1.1 [pro] ultra takes an aspect ratio and an image_prompt.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
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
from worker.providers.options import provider_options
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
    # "flux1": width/height (256-1440, multiples of 32); "flux2": width/height (sides at least
    # 64 and multiples of 16, at most 4 MP); "aspect": aspect_ratio only.
    sizing: str
    # Reference images, sent as input_image, input_image_2 ... (0: the model takes none).
    max_inputs: int = 0
    # FLUX 1.1 [pro] ultra: its one input image is `image_prompt`, base64 only.
    image_prompt: bool = False
    formats: tuple[str, ...] = ("jpeg", "png")
    max_safety_tolerance: int = 6
    transparent_bg: bool = False
    # Fields sent unless the client's provider_options set them.
    defaults: tuple[tuple[str, object], ...] = ()


def _flux2(endpoint: str, max_inputs: int, **defaults: object) -> BflModel:
    """A FLUX.2 endpoint (docs/provider-contracts-2.md section 10): 0-5 tolerance for public
    keys, webp and transparent backgrounds, up to `max_inputs` references."""
    return BflModel(
        endpoint,
        "flux2",
        max_inputs=max_inputs,
        formats=("jpeg", "png", "webp"),
        max_safety_tolerance=5,
        transparent_bg=True,
        defaults=tuple(defaults.items()),
    )


# Catalog model id -> BFL endpoint.
MODELS: dict[str, BflModel] = {
    "flux-1.1-pro": BflModel("flux-pro-1.1", "flux1"),
    "flux-pro": BflModel("flux-pro", "flux1"),
    "flux-dev": BflModel("flux-dev", "flux1"),
    "flux-1.1-pro-ultra": BflModel("flux-pro-1.1-ultra", "aspect", image_prompt=True, formats=("jpeg", "png", "webp")),
    "flux-kontext-pro": BflModel("flux-kontext-pro", "aspect", max_inputs=4),
    "flux-kontext-max": BflModel("flux-kontext-max", "aspect", max_inputs=4),
    "flux-2-pro": _flux2("flux-2-pro", 8),
    "flux-2-max": _flux2("flux-2-max", 8),
    # The flex guidance default differs between BFL's SDK (5.0) and its docs (4.5): send one.
    "flux-2-flex": _flux2("flux-2-flex", 8, guidance=5.0),
    "flux-2-klein-4b": _flux2("flux-2-klein-4b", 4),
    "flux-2-klein-9b": _flux2("flux-2-klein-9b", 5),
}
WIDEST = Fraction(21, 9)  # aspect ratios from 21:9 to 9:21
FLUX2_MAX_PIXELS = 4_194_304  # 2048 x 2048
PENDING = "Pending"
READY = "Ready"
MODERATED = {"Request Moderated": "the prompt or input image", "Content Moderated": "the generated image"}
FAILED = "Error"
NOT_FOUND = "Task not found"


def request_body(
    generation: gen.Generation, model: BflModel, safety_tolerance: int, input_images: Sequence[str] = ()
) -> dict:
    """The JSON of POST /v1/<model> for one image (seed of the first; callers vary it).

    `input_images` are URLs or base64, in the client's order. The client's provider_options
    are merged last, except that safety_tolerance stays within the model's range and at
    most 2 with input images (BFL's rule for image inputs).
    """
    params = generation.params
    if params.negative_prompt:
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} on bfl takes no negative_prompt")
    kind = params.kind or gen.GENERATION_KIND_GENERATE
    if kind not in (gen.GENERATION_KIND_GENERATE, gen.GENERATION_KIND_EDIT):
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"bfl cannot do {gen.GenerationKind.Name(kind)}")
    takes = 1 if model.image_prompt else model.max_inputs
    if kind == gen.GENERATION_KIND_EDIT and not (takes and input_images):
        raise ProviderError(
            ErrorCode.INVALID_REQUEST, f"{generation.model} on bfl edits no images; flux-kontext-pro does"
        )
    if len(input_images) > takes:
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} takes at most {takes} input image(s)")
    options = provider_options(generation)
    tolerance = min(int(options.pop("safety_tolerance", safety_tolerance)), model.max_safety_tolerance)
    wants = formats.of(generation.output_format).name
    body: dict = {
        "prompt": params.prompt,
        "seed": generation.seed,
        "safety_tolerance": min(tolerance, 2) if input_images else tolerance,
        # Lossless when the client wants a format the model cannot make (converted here).
        "output_format": wants if wants in model.formats else "png",
    }
    if params.background == "transparent":
        if not model.transparent_bg:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} makes no transparent backgrounds")
        body["transparent_bg"] = True
    if model.sizing == "flux1":
        body["width"], body["height"] = fit(generation.width, generation.height, lo=256, hi=1440, step=32)
    elif model.sizing == "flux2":
        if generation.width and generation.height:  # else the model's choice (an input image's size)
            body["width"], body["height"] = flux2_size(generation.width, generation.height)
    else:
        body["aspect_ratio"] = aspect_ratio(generation.width, generation.height, widest=WIDEST)
    if model.image_prompt:
        if input_images:
            body["image_prompt"] = input_images[0]
    else:
        for i, image in enumerate(input_images):
            body["input_image" if i == 0 else f"input_image_{i + 1}"] = image
    body.update(options)
    for name, value in model.defaults:
        body.setdefault(name, value)
    return body


def flux2_size(width: int, height: int) -> tuple[int, int]:
    """The size FLUX.2 takes nearest WIDTHxHEIGHT: multiples of 16, at least 64, at most 4 MP
    (routing admits only such sizes; this keeps a wider catalog entry within them)."""
    scale = min(1.0, math.sqrt(FLUX2_MAX_PIXELS / (width * height)))
    return tuple(max(64, int(side * scale) // 16 * 16) for side in (width, height))  # type: ignore[return-value]


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
        inputs = images_of(generation) if model.max_inputs or model.image_prompt else []
        # BFL fetches http(s) URLs itself (not an image_prompt); stored images go as base64.
        images = [
            ref.url if is_client_url(ref) and not model.image_prompt else await self.inputs.b64(ref) for ref in inputs
        ]
        body = request_body(generation, model, self.settings.safety_tolerance, images)
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
