"""Stability AI REST v2beta (Stable Image): ultra, core and sd3 (SD 3 / 3.5) generation.

docs/provider-contracts.md §3. Every request is multipart/form-data, text-only ones too; one
request makes one image, so `n` images are `n` requests (seeds seed, seed+1, ...), sent
concurrently (the upstream allows 150 requests per 10 s). Sizes are aspect ratios on every
v2beta endpoint (the nearest of the nine to the requested width:height); the upstream
picks the pixels (about one megapixel), and the result keeps them.

- `accept: image/*` (STABILITY_ACCEPT, the default) returns the raw image with the
  `finish-reason` and `seed` headers; `accept: application/json` returns base64 with the
  same values as fields. `finish-reason: CONTENT_FILTERED` is a 200 whose image the
  upstream blurred: it fails as a content-policy violation, never shown as a result.
- 403 `name: content_moderation` is a refusal (content policy, no retry); other 403s and
  401 are the operator's key; 400/413/422 invalid; 429 and 5xx retried.
- SDXL (`stable-diffusion-xl`) is not on v2beta (it lived on the v1 engines API, which the
  contracts do not document): the catalog routes it to Replicate and fal. No cancel
  endpoint; a sync API.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import httpx
from pydantic import Field, SecretStr

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit import formats
from svckit.errors import ErrorCode
from worker.providers.adapter import JobClock, Provider, all_or_first_error
from worker.providers.base import GeneratedImage, Progress, ProviderError, ProviderResult
from worker.providers.images import decode_b64, deliver
from worker.providers.options import provider_options
from worker.providers.settings import UpstreamSettings
from worker.providers.shaping import nearest_ratio, non_empty_prompt, requested_ratio

MAX_SEED = 4_294_967_294
ASPECT_RATIOS = ("21:9", "16:9", "3:2", "5:4", "1:1", "4:5", "2:3", "9:16", "9:21")
ALL_FORMATS = ("png", "jpeg", "webp")


@dataclass(frozen=True)
class Route:
    """Where a catalog model goes: the endpoint, its `model` field (sd3), what it takes."""

    endpoint: Literal["ultra", "core", "sd3"]
    model: str = ""
    output_formats: tuple[str, ...] = ALL_FORMATS
    negative_prompt: bool = True
    image_input: bool = False


def _sd3(model: str, *, turbo: bool = False) -> Route:
    return Route("sd3", model, ("png", "jpeg"), negative_prompt=not turbo, image_input=True)


# Catalog model id -> route.
MODELS: dict[str, Route] = {
    "sd-3.5-large": _sd3("sd3.5-large"),
    "sd-3.5-large-turbo": _sd3("sd3.5-large-turbo", turbo=True),
    "sd-3.5-medium": _sd3("sd3.5-medium"),
    "sd-3-large": _sd3("sd3-large"),
    "sd-3-large-turbo": _sd3("sd3-large-turbo", turbo=True),
    "sd-3-medium": _sd3("sd3-medium"),
    "stable-image-core": Route("core"),
    "stable-image-ultra": Route("ultra", image_input=True),
}
STYLE_PRESETS = frozenset(
    {
        "3d-model",
        "analog-film",
        "anime",
        "cinematic",
        "comic-book",
        "digital-art",
        "enhance",
        "fantasy-art",
        "isometric",
        "line-art",
        "low-poly",
        "modeling-compound",
        "neon-punk",
        "origami",
        "photographic",
        "pixel-art",
        "tile-texture",
    }
)


class StabilitySettings(UpstreamSettings):
    api_key: SecretStr = Field(validation_alias="STABILITY_API_KEY")
    base_url: str = Field("https://api.stability.ai", validation_alias="STABILITY_BASE_URL")
    accept: Literal["image/*", "application/json"] = Field("image/*", validation_alias="STABILITY_ACCEPT")
    # Image-to-image: how far from the input the result may go (the API requires one).
    image_strength: float = Field(0.6, validation_alias="STABILITY_IMAGE_STRENGTH", ge=0, le=1)


def route_of(model: str) -> Route:
    try:
        return MODELS[model]
    except KeyError:
        raise ProviderError(
            ErrorCode.INVALID_REQUEST, f"the stability adapter does not serve the model {model!r}"
        ) from None


def aspect_ratio(generation: gen.Generation) -> str:
    return nearest_ratio(*requested_ratio(generation), ASPECT_RATIOS)


def form_fields(
    generation: gen.Generation, route: Route, *, index: int, with_image: bool, strength: float
) -> dict[str, str]:
    """The text parts of request `index` (of n) for this route."""
    p = generation.params
    fields = {"prompt": non_empty_prompt(generation, "stability")}
    if route.model:
        fields["model"] = route.model
    if p.negative_prompt:
        if not route.negative_prompt:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} does not take a negative prompt")
        fields["negative_prompt"] = p.negative_prompt
    if with_image:
        if not route.image_input:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} does not take an input image")
        fields["strength"] = f"{strength:g}"
        if route.endpoint == "sd3":
            fields["mode"] = "image-to-image"
    else:
        fields["aspect_ratio"] = aspect_ratio(generation)
    fields["seed"] = str((generation.seed + index) % (MAX_SEED + 1))
    asked = formats.of(generation.output_format).name
    fields["output_format"] = asked if asked in route.output_formats else "png"
    if p.style and route.endpoint == "core":
        if p.style not in STYLE_PRESETS:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"unknown style preset {p.style!r}")
        fields["style_preset"] = p.style
    # Form parts are text: numbers as written, booleans as JSON's true/false.
    fields.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in provider_options(generation).items()})
    return fields


def refusal(response: httpx.Response) -> ProviderError | None:
    if response.status_code != 403:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict) and body.get("name") == "content_moderation":
        detail = "; ".join(str(e) for e in body.get("errors") or []) or "flagged by content moderation"
        return ProviderError(ErrorCode.CONTENT_POLICY_VIOLATION, f"stability refused the request: {detail}")
    return None


def result_of(response: httpx.Response) -> tuple[bytes, str, str]:
    """(image bytes, finish reason, seed) from either response shape."""
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            body = response.json()
        except ValueError as exc:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "stability answered with malformed JSON") from exc
        if not isinstance(body, dict) or not body.get("image"):
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "stability answered without an image")
        return decode_b64(body["image"], "stability"), str(body.get("finish_reason") or ""), str(body.get("seed") or "")
    return response.content, response.headers.get("finish-reason", ""), response.headers.get("seed", "")


def check_finish(reason: str) -> None:
    if reason == "CONTENT_FILTERED":
        raise ProviderError(
            ErrorCode.CONTENT_POLICY_VIOLATION,
            "stability's content filter blurred the result (finish-reason CONTENT_FILTERED)",
        )
    if reason not in ("", "SUCCESS"):
        raise ProviderError(ErrorCode.PROVIDER_ERROR, f"stability finished with {reason[:50]!r}")


class StabilityProvider(Provider):
    name = "stability"
    settings_type = StabilitySettings
    settings: StabilitySettings

    @staticmethod
    def headers(settings: StabilitySettings) -> dict[str, str]:
        key = settings.api_key.get_secret_value()
        return {"authorization": f"Bearer {key}", "accept": settings.accept, "stability-client-id": "pixelmesh"}

    classify = staticmethod(refusal)

    async def run(self, generation: gen.Generation, progress: Progress, clock: JobClock) -> ProviderResult:
        route = route_of(generation.model)
        if (generation.params.kind or gen.GENERATION_KIND_GENERATE) != gen.GENERATION_KIND_GENERATE:
            raise ProviderError(
                ErrorCode.INVALID_REQUEST, "stability generates from a prompt (and an optional image) only"
            )
        inputs = [i for i in await self.inputs.load(generation) if i.role == "image"]
        if len(inputs) > 1:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} takes one input image")
        n = generation.params.n or 1
        done = 0

        async def one(index: int) -> GeneratedImage:
            nonlocal done
            fields = form_fields(
                generation, route, index=index, with_image=bool(inputs), strength=self.settings.image_strength
            )
            parts: list = [(k, (None, v)) for k, v in fields.items()]
            if inputs:
                parts.append(("image", (inputs[0].filename, inputs[0].data, inputs[0].mime_type)))
            response = await self.http.request("POST", f"/v2beta/stable-image/generate/{route.endpoint}", files=parts)
            if index == 0 and (request_id := response.headers.get("x-request-id")):
                progress.upstream(request_id)
            data, reason, _seed = result_of(response)
            check_finish(reason)
            image = await deliver(data, generation, self.name)
            done += 1
            await progress(100.0 * done / n)
            return image

        return ProviderResult(await all_or_first_error([one(i) for i in range(n)]))
