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
- Ideogram 3.0's image endpoints (docs/provider-contracts-2.md §9), for an EDIT of a v3
  model: with a mask, `/v1/ideogram-v3/inpaint` (falling back to the legacy `/edit`
  while an upstream lacks it), the mask converted from OpenAI's convention (transparent =
  edit) to Ideogram's black-and-white one (black = edit); without a mask, `remix` (at the
  upstream's default image weight, 50: the gateway has no field for it). The catalog
  models `ideogram-v3-reframe` (a square image to the asked size, no prompt) and
  `ideogram-v3-replace-background` (the prompt describes the new background) name those
  two endpoints. Style types are the v3 ones (STYLIZED included; CUSTOM needs a custom
  model, which the gateway does not name).
- 422 is the safety check, of the prompt or of the input image (content policy, no
  retry); 402 (balance, plan limit) and 401/403 are the operator's account; 400 invalid.
  The API is synchronous: no cancel.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
from PIL import Image
from pydantic import Field, SecretStr

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from svckit.logging import get_logger
from worker.providers.adapter import Context, JobClock, Provider, all_or_first_error
from worker.providers.base import Progress, ProviderError, ProviderResult
from worker.providers.images import deliver
from worker.providers.input_images import InputFile, as_png
from worker.providers.options import provider_options
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
V3_STYLES = frozenset({"AUTO", "GENERAL", "REALISTIC", "DESIGN", "FICTION", "STYLIZED"})
V3_FORMATS = ("PNG", "JPEG", "WEBP")


@dataclass(frozen=True)
class Route:
    v3: bool
    model: str = ""  # legacy `model`
    rendering_speed: str = ""  # v3
    negative_prompt: bool = True
    style_type: bool = True
    # v3 only: "" (generate; an edit is inpaint or remix), "reframe" or "replace-background".
    operation: str = ""
    # v3 generate with the input image as its character_reference_images (no other input).
    character: bool = False


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
    "ideogram-v3-character": Route(True, rendering_speed="DEFAULT", character=True),
    "ideogram-v3-character-turbo": Route(True, rendering_speed="TURBO", character=True),
    "ideogram-v3-character-quality": Route(True, rendering_speed="QUALITY", character=True),
    "ideogram-v3-reframe": Route(True, rendering_speed="DEFAULT", style_type=False, operation="reframe"),
    "ideogram-v3-replace-background": Route(
        True, rendering_speed="DEFAULT", style_type=False, operation="replace-background"
    ),
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


def image_fields(generation: gen.Generation, route: Route, magic_prompt: str, *, masked: bool) -> tuple[str, dict]:
    """(endpoint, fields) of a v3 image edit: inpaint with a mask, else remix; or the
    route's own reframe / replace-background. Each endpoint gets only what it takes."""
    p = generation.params
    n = p.n or 1
    if not 1 <= n <= MAX_IMAGES:
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"ideogram makes 1 to {MAX_IMAGES} images per request")
    fields: dict = {}
    if route.operation == "reframe":
        endpoint = "reframe"
        fields["resolution"] = f"{generation.width}x{generation.height}"
    else:
        fields["prompt"] = non_empty_prompt(generation, "ideogram")
        endpoint = route.operation or ("inpaint" if masked else "remix")
    fields["rendering_speed"] = route.rendering_speed
    fields["seed"] = seed_within(generation, MAX_SEED)
    fields["num_images"] = n
    if endpoint == "remix":
        fields["aspect_ratio"] = nearest_ratio(*requested_ratio(generation), V3_RATIOS, _ratio)
        if p.negative_prompt:
            fields["negative_prompt"] = p.negative_prompt
    elif p.negative_prompt:
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"ideogram's {endpoint} takes no negative prompt")
    if p.style:
        style = p.style.upper()
        if endpoint in ("reframe", "replace-background") or style not in V3_STYLES:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"ideogram's {endpoint} does not take the style {p.style!r}")
        fields["style_type"] = style
    if magic_prompt and endpoint != "reframe":
        fields["magic_prompt"] = magic_prompt
    weight = provider_options(generation).get("image_weight")
    if weight is not None:
        if endpoint != "remix":
            raise ProviderError(
                ErrorCode.INVALID_REQUEST, f"image_weight applies to a remix (an image without a mask), not {endpoint}"
            )
        fields["image_weight"] = weight
    return endpoint, fields


def text_parts(fields: dict) -> list:
    """The v3 endpoints' text fields as multipart parts (files go beside them)."""
    return [(k, (None, str(v))) for k, v in fields.items()]


def _black_is_edit(data: bytes) -> bytes:
    """An OpenAI-style mask (fully transparent = edit) as Ideogram's: black = edit, white = keep.
    A mask without alpha is taken as Ideogram's own (dark = edit)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        if "A" in image.getbands() or "transparency" in image.info:
            level = image.convert("RGBA").getchannel("A")
        else:
            level = image.convert("L")
    out = io.BytesIO()
    level.point(lambda v: 255 if v >= 128 else 0).convert("L").save(out, "PNG")
    return out.getvalue()


async def ideogram_mask(mask: InputFile, image: InputFile) -> InputFile:
    if (mask.width, mask.height) != (image.width, image.height):
        raise ProviderError(ErrorCode.INVALID_REQUEST, "the mask must be the same size as the image")
    data = await asyncio.to_thread(_black_is_edit, mask.data)
    return InputFile("mask", data, "image/png", mask.width, mask.height, "PNG")


# What a 404 of /inpaint reads as: an upstream that still has only the legacy /edit.
NO_INPAINT = "ideogram has no /v1/ideogram-v3/inpaint (HTTP 404)"


def refusal(response: httpx.Response) -> ProviderError | None:
    if response.status_code == 404 and response.request.url.path.endswith("/v1/ideogram-v3/inpaint"):
        return ProviderError(ErrorCode.PROVIDER_ERROR, NO_INPAINT)
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

    def _magic_prompt(self, generation: gen.Generation) -> str:
        """The request's own magic_prompt (a provider option), else the operator's default."""
        return str(provider_options(generation).get("magic_prompt", self.settings.magic_prompt))

    async def run(self, generation: gen.Generation, progress: Progress, clock: JobClock) -> ProviderResult:
        route = route_of(generation.model)
        kind = generation.params.kind or gen.GENERATION_KIND_GENERATE
        if route.character and kind in (gen.GENERATION_KIND_GENERATE, gen.GENERATION_KIND_EDIT):
            fields, response = await self._character(generation, route)
        elif kind == gen.GENERATION_KIND_EDIT:
            fields, response = await self._edit(generation, route)
        elif kind != gen.GENERATION_KIND_GENERATE:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"ideogram does not do {gen.GenerationKind.Name(kind)}")
        elif route.operation:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} needs an input image (an edit)")
        else:
            fields = request_fields(generation, route, self._magic_prompt(generation))
            # This call's images count against the upstream's in-flight limit until it answers.
            async with self.slots.hold(fields["num_images"]):
                if route.v3:
                    parts = text_parts(fields)
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
            rewritten = prompt if prompt and prompt != fields.get("prompt", prompt) else ""
            images.append(await deliver(data, generation, self.name, revised_prompt=rewritten))
            await progress(50.0 + 50.0 * (index + 1) / len(safe))
        return ProviderResult(images)

    async def _character(self, generation: gen.Generation, route: Route) -> tuple[dict, httpx.Response]:
        """A v3 generation from the prompt with the one input image as the character reference."""
        inputs = await self.inputs.load(generation)
        if [i.role for i in inputs] != ["image"]:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} takes one character image and no mask")
        image = inputs[0] if inputs[0].image_format in V3_FORMATS else await as_png(inputs[0])
        fields = request_fields(generation, route, self._magic_prompt(generation))
        parts = [("character_reference_images", (image.filename, image.data, image.mime_type)), *text_parts(fields)]
        async with self.slots.hold(fields["num_images"]):
            return fields, await self.http.request("POST", "/v1/ideogram-v3/generate", files=parts)

    async def _edit(self, generation: gen.Generation, route: Route) -> tuple[dict, httpx.Response]:
        """One v3 image call: the input image (and the converted mask) as files, the fields as text."""
        if not route.v3:
            raise ProviderError(
                ErrorCode.INVALID_REQUEST, f"{generation.model} does not edit; use an ideogram-v3 model"
            )
        inputs = await self.inputs.load(generation)
        images = [i for i in inputs if i.role != "mask"]
        masks = [i for i in inputs if i.role == "mask"]
        if len(images) != 1:
            raise ProviderError(ErrorCode.INVALID_REQUEST, "an ideogram edit takes one input image")
        image = images[0] if images[0].image_format in V3_FORMATS else await as_png(images[0])
        if route.operation == "reframe" and image.width != image.height:
            raise ProviderError(ErrorCode.INVALID_REQUEST, "ideogram reframes square images only")
        if masks and route.operation:
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} takes no mask")
        endpoint, fields = image_fields(generation, route, self._magic_prompt(generation), masked=bool(masks))
        files = [("image", (image.filename, image.data, image.mime_type))]
        if masks:
            mask = await ideogram_mask(masks[0], image)
            files.append(("mask", (mask.filename, mask.data, mask.mime_type)))
        parts = files + text_parts(fields)
        async with self.slots.hold(fields["num_images"]):
            try:
                response = await self.http.request("POST", f"/v1/ideogram-v3/{endpoint}", files=parts)
            except ProviderError as exc:
                if exc.message != NO_INPAINT:
                    raise
                # docs/provider-contracts-2.md §9: /inpaint is the new name of the legacy /edit.
                response = await self.http.request("POST", "/v1/ideogram-v3/edit", files=parts)
        return fields, response
