"""Ideogram: the legacy `/generate` (JSON `image_request`) and `/v1/ideogram-v3/generate`
(multipart). docs/provider-contracts.md §4.

- V_1 / V_2 / V_2A (and their turbos) go to `/generate`; Ideogram 3.0 goes to the v3
  endpoint with a `rendering_speed` per catalog model. Sizes are the nearest of each
  endpoint's aspect ratios (`ASPECT_16_9` / `16x9`); seeds fold into 0..2147483647.
- Results are temporary URLs, downloaded at once. An item with `is_image_safe: false`
  has no URL (the upstream bills it anyway); when no item is safe the job fails as a
  content-policy violation, else the safe ones are the result. `data[].prompt` (the Magic
  Prompt rewrite) becomes the revised prompt when it differs from the prompt sent.
- Ideogram limits the images in flight per organisation (10 by default; more answer 429
  `inflight_limit`). Each worker process holds at most IDEOGRAM_MAX_IN_FLIGHT images in
  flight (a weighted semaphore: a job of n images takes n slots); with several worker
  replicas, set it to the organisation's limit divided by the replicas. 429s that still
  happen are retried within the budget.
- 422 is the safety check (content policy, no retry); 402 (balance, plan limit) and
  401/403 are the operator's account; 400 invalid. Edit and remix are not in the
  contracts, so this adapter does not do them. The API is synchronous: no cancel.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from pydantic import Field, SecretStr

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from svckit.logging import get_logger
from worker.providers.adapter import Context, JobClock, Provider, all_or_first_error
from worker.providers.base import Progress, ProviderError, ProviderResult
from worker.providers.images import deliver
from worker.providers.settings import UpstreamSettings
from worker.providers.shaping import nearest_ratio, non_empty_prompt, requested_ratio, seed_within

log = get_logger(__name__)
MAX_SEED = 2_147_483_647
MAX_IMAGES = 8
LEGACY_RATIOS = ("10_16", "16_10", "9_16", "16_9", "3_2", "2_3", "4_3", "3_4", "1_1", "1_3", "3_1")
V3_RATIOS = (
    "1x3",
    "3x1",
    "1x2",
    "2x1",
    "9x16",
    "16x9",
    "10x16",
    "16x10",
    "2x3",
    "3x2",
    "3x4",
    "4x3",
    "4x5",
    "5x4",
    "1x1",
)
LEGACY_STYLES = frozenset({"AUTO", "GENERAL", "FICTION", "REALISTIC", "DESIGN", "RENDER_3D", "ANIME"})
V3_STYLES = frozenset({"AUTO", "GENERAL", "REALISTIC", "DESIGN", "FICTION"})


@dataclass(frozen=True)
class Route:
    v3: bool
    model: str = ""  # legacy `model`
    rendering_speed: str = ""  # v3
    negative_prompt: bool = True
    style_type: bool = True


# Catalog model id -> route.
MODELS: dict[str, Route] = {
    "ideogram-v1": Route(False, "V_1", style_type=False),
    "ideogram-v1-turbo": Route(False, "V_1_TURBO", style_type=False),
    "ideogram-v2": Route(False, "V_2"),
    "ideogram-v2-turbo": Route(False, "V_2_TURBO"),
    "ideogram-v2a": Route(False, "V_2A", negative_prompt=False),
    "ideogram-v2a-turbo": Route(False, "V_2A_TURBO", negative_prompt=False),
    "ideogram-v3": Route(True, rendering_speed="DEFAULT"),
    "ideogram-v3-turbo": Route(True, rendering_speed="TURBO"),
    "ideogram-v3-quality": Route(True, rendering_speed="QUALITY"),
    "ideogram-v3-flash": Route(True, rendering_speed="FLASH"),
}


class IdeogramSettings(UpstreamSettings):
    api_key: SecretStr = Field(validation_alias="IDEOGRAM_API_KEY")
    base_url: str = Field("https://api.ideogram.ai", validation_alias="IDEOGRAM_BASE_URL")
    # Images this process keeps in flight upstream (the organisation's default limit is 10).
    max_in_flight: int = Field(10, validation_alias="IDEOGRAM_MAX_IN_FLIGHT", gt=0)
    # Magic Prompt (AUTO | ON | OFF); empty leaves the upstream's default.
    magic_prompt: str = Field("", validation_alias="IDEOGRAM_MAGIC_PROMPT", pattern="^(|AUTO|ON|OFF)$")


def route_of(model: str) -> Route:
    try:
        return MODELS[model]
    except KeyError:
        raise ProviderError(
            ErrorCode.INVALID_REQUEST, f"the ideogram adapter does not serve the model {model!r}"
        ) from None


def _ratio(text: str) -> tuple[int, int]:
    w, h = text.replace("_", "x").split("x")
    return int(w), int(h)


def request_fields(generation: gen.Generation, route: Route, magic_prompt: str) -> dict:
    """The fields of one call: the legacy `image_request` object, or the v3 form fields."""
    p = generation.params
    n = p.n or 1
    if not 1 <= n <= MAX_IMAGES:
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"ideogram makes 1 to {MAX_IMAGES} images per request")
    fields: dict = {"prompt": non_empty_prompt(generation, "ideogram")}
    if route.v3:
        fields["rendering_speed"] = route.rendering_speed
        fields["aspect_ratio"] = nearest_ratio(*requested_ratio(generation), V3_RATIOS, _ratio)
    else:
        fields["model"] = route.model
        fields["aspect_ratio"] = "ASPECT_" + nearest_ratio(*requested_ratio(generation), LEGACY_RATIOS, _ratio)
    fields["seed"] = seed_within(generation, MAX_SEED)
    fields["num_images"] = n
    if p.negative_prompt:
        if not route.negative_prompt:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} does not take a negative prompt")
        fields["negative_prompt"] = p.negative_prompt
    if p.style:
        style = p.style.upper()
        if not route.style_type or style not in (V3_STYLES if route.v3 else LEGACY_STYLES):
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} does not take the style {p.style!r}")
        fields["style_type"] = style
    if magic_prompt:
        fields["magic_prompt" if route.v3 else "magic_prompt_option"] = magic_prompt
    return fields


def refusal(response: httpx.Response) -> ProviderError | None:
    if response.status_code != 422:
        return None
    try:
        body = response.json()
        detail = str(body.get("error")) if isinstance(body, dict) and body.get("error") else ""
    except ValueError:
        detail = ""
    return ProviderError(
        ErrorCode.CONTENT_POLICY_VIOLATION, f"ideogram refused the request: {detail or 'failed the safety check'}"
    )


class ImageSlots:
    """A weighted semaphore: at most `capacity` images in flight; a job holds n slots."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.free = capacity
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def hold(self, count: int) -> AsyncIterator[None]:
        count = min(count, self.capacity)
        async with self._changed:
            await self._changed.wait_for(lambda: self.free >= count)
            self.free -= count
        try:
            yield
        finally:
            async with self._changed:
                self.free += count
                self._changed.notify_all()


class IdeogramProvider(Provider):
    name = "ideogram"
    settings_type = IdeogramSettings
    settings: IdeogramSettings

    def __init__(self, context: Context) -> None:
        super().__init__(context)
        self.slots = ImageSlots(self.settings.max_in_flight)

    @staticmethod
    def headers(settings: IdeogramSettings) -> dict[str, str]:
        return {"Api-Key": settings.api_key.get_secret_value()}

    classify = staticmethod(refusal)

    async def run(self, generation: gen.Generation, progress: Progress, clock: JobClock) -> ProviderResult:
        route = route_of(generation.model)
        if (generation.params.kind or gen.GENERATION_KIND_GENERATE) != gen.GENERATION_KIND_GENERATE:
            raise ProviderError(ErrorCode.INVALID_REQUEST, "ideogram edit and remix are not supported by this gateway")
        fields = request_fields(generation, route, self.settings.magic_prompt)
        # This call's images count against the upstream's in-flight limit until it answers.
        async with self.slots.hold(fields["num_images"]):
            if route.v3:
                parts = [(k, (None, str(v))) for k, v in fields.items()]
                response = await self.http.request("POST", "/v1/ideogram-v3/generate", files=parts)
            else:
                response = await self.http.request("POST", "/generate", json={"image_request": fields})
        await progress(50.0)
        try:
            body = response.json()
        except ValueError as exc:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "ideogram answered with malformed JSON") from exc
        items = body.get("data") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "ideogram answered without images")
        items = items[: fields["num_images"]]
        safe = [i for i in items if isinstance(i, dict) and i.get("is_image_safe") is not False and i.get("url")]
        if not safe:
            raise ProviderError(
                ErrorCode.CONTENT_POLICY_VIOLATION, "ideogram withheld every image as unsafe (is_image_safe: false)"
            )
        if len(safe) < len(items):
            log.info("ideogram withheld unsafe images", withheld=len(items) - len(safe), kept=len(safe))
        # The URLs expire: fetch them all now, together.
        downloads = await all_or_first_error(
            [self.http.download(i["url"], self.settings.download_max_bytes) for i in safe]
        )
        images = []
        for index, (item, data) in enumerate(zip(safe, downloads, strict=True)):
            prompt = item.get("prompt")
            rewritten = prompt if prompt and prompt != fields["prompt"] else ""
            images.append(await deliver(data, generation, self.name, revised_prompt=rewritten))
            await progress(50.0 + 50.0 * (index + 1) / len(safe))
        return ProviderResult(images)
