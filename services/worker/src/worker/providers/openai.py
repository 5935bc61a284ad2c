"""OpenAI Images API: generations (JSON), edits and variations (multipart), streaming.

Models (docs/provider-contracts.md §1): `dall-e-2`, `dall-e-3` and the GPT image models
(`gpt-image-1`, `-1-mini`, `-1.5`, `-2`, `-2-<date>`, `chatgpt-image-latest`, and any later
`gpt-image-*`). The catalog id is the upstream model name unless OPENAI_MODELS maps it
(JSON, e.g. `{"gpt-image-2": "gpt-image-2-2026-04-21"}`), so pinning a snapshot is config.

- Fields go only to the models that take them: `style` to dall-e-3; `response_format` to
  DALL·E (GPT image models answer 400 unknown_parameter and always return base64);
  `background`, `moderation`, `output_format`, `output_compression`, `stream` and
  `partial_images` to GPT image models; `input_fidelity` to their edits (not
  gpt-image-1-mini's). `gpt-image-2*` takes free WIDTHxHEIGHT sizes (checked by routing
  against the catalog's rule); edits always go upstream as multipart, which takes them.
  GPT image models encode the requested format themselves, so their bytes are not
  re-encoded; DALL·E's PNGs are converted.
- `stream` (GPT image models): the SSE events `image_generation.partial_image` /
  `image_edit.partial_image` become progress with a partial image, `*.completed` the
  results and usage; a `data` object carrying `error` mid-stream fails the job.
- Refusals are HTTP 400 with code `content_policy_violation` / `moderation_blocked`, or
  type `image_generation_user_error` (even with a null code): content policy, no retry.
- OpenAI has no job ids and no cancel endpoint; the `x-request-id` header names the call.
"""

from __future__ import annotations

import enum
import json
from typing import Any, Literal

import httpx
from pydantic import Field, SecretStr

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit import formats
from svckit.errors import ErrorCode
from worker.providers.adapter import JobClock, Provider
from worker.providers.base import GeneratedImage, Progress, ProviderError, ProviderResult
from worker.providers.images import decode_b64, deliver
from worker.providers.input_images import InputFile, as_png
from worker.providers.settings import UpstreamSettings
from worker.providers.shaping import RATIO
from worker.providers.sse import events, open_stream

REFUSAL_CODES = frozenset({"content_policy_violation", "moderation_blocked"})
REFUSAL_TYPE = "image_generation_user_error"
LOSSY = ("jpeg", "webp")


class OpenAISettings(UpstreamSettings):
    api_key: SecretStr = Field(validation_alias="OPENAI_API_KEY")
    base_url: str = Field("https://api.openai.com/v1", validation_alias="OPENAI_BASE_URL")
    # What DALL·E models are asked to return: inline base64 (one round trip) or a URL,
    # which the adapter then downloads at once (it expires after 60 minutes).
    dalle_response_format: Literal["b64_json", "url"] = Field(
        "b64_json", validation_alias="OPENAI_DALLE_RESPONSE_FORMAT"
    )
    # Catalog model id -> upstream model name, where they differ (JSON object).
    models: dict[str, str] = Field(default_factory=dict, validation_alias="OPENAI_MODELS")


class Family(enum.Enum):
    DALLE2 = "dall-e-2"
    DALLE3 = "dall-e-3"
    GPT = "gpt-image"


def family_of(model: str) -> Family:
    if model.startswith("dall-e-2"):
        return Family.DALLE2
    if model.startswith("dall-e-3"):
        return Family.DALLE3
    if model.startswith(("gpt-image-", "chatgpt-image-")):
        return Family.GPT
    raise ProviderError(ErrorCode.INVALID_REQUEST, f"the openai adapter does not serve the model {model!r}")


def size_of(generation: gen.Generation) -> str:
    """`auto` when the client left the size to the model, else WIDTHxHEIGHT."""
    if generation.params.size == "auto":
        return "auto"
    if (m := RATIO.match(generation.params.size)) and "x" in generation.params.size:
        return f"{m.group(1)}x{m.group(2)}"
    return f"{generation.width}x{generation.height}"


def fields_for(
    generation: gen.Generation, family: Family, model: str, *, kind: gen.GenerationKind.ValueType, response_format: str
) -> dict:
    """The request fields of one call, only those the model and endpoint take."""
    p = generation.params
    body: dict = {"model": model}
    if kind != gen.GENERATION_KIND_VARIATION:
        body["prompt"] = p.prompt
    body["n"] = p.n or 1
    body["size"] = size_of(generation)
    quality = generation.quality or p.quality
    if quality and kind != gen.GENERATION_KIND_VARIATION:
        body["quality"] = quality
    if family is Family.DALLE3 and p.style:
        body["style"] = p.style
    if family is Family.GPT:
        fmt = formats.of(generation.output_format).name
        body["output_format"] = fmt
        if p.HasField("output_compression") and fmt in LOSSY:
            body["output_compression"] = p.output_compression
        if p.background:
            if p.background == "transparent" and model.startswith("gpt-image-2"):
                # docs/provider-contracts.md §1: the SDK and the CLI reference disagree on whether
                # gpt-image-2 accepts it; it is not sent until a live call settles it.
                raise ProviderError(ErrorCode.INVALID_REQUEST, f"{model} does not take background=transparent")
            body["background"] = p.background
        if p.moderation and kind == gen.GENERATION_KIND_GENERATE:
            body["moderation"] = p.moderation
        if p.input_fidelity and kind == gen.GENERATION_KIND_EDIT:
            if model.startswith("gpt-image-1-mini"):
                raise ProviderError(ErrorCode.INVALID_REQUEST, f"{model} does not take input_fidelity")
            body["input_fidelity"] = p.input_fidelity
        if p.stream:
            body["stream"] = True
            body["partial_images"] = max(0, min(3, p.partial_images))
    else:
        body["response_format"] = response_format
    if p.user:
        body["user"] = p.user
    return body


def refusal(body: object) -> ProviderError | None:
    """OpenAI's content-policy refusal in an error body (any of its three shapes), or None."""
    if not isinstance(body, dict):
        return None
    inner = body.get("error")
    err = inner if isinstance(inner, dict) else body
    if err.get("code") in REFUSAL_CODES or err.get("type") == REFUSAL_TYPE:
        message = err.get("message") or "the request was rejected by the safety system"
        return ProviderError(ErrorCode.CONTENT_POLICY_VIOLATION, f"openai refused the request: {message}")
    return None


def usage_of(body: dict) -> gen.Usage | None:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    details = usage.get("input_tokens_details") or {}
    return gen.Usage(
        input_tokens=int(usage.get("input_tokens") or 0),
        output_tokens=int(usage.get("output_tokens") or 0),
        total_tokens=int(usage.get("total_tokens") or 0),
        input_text_tokens=int(details.get("text_tokens") or 0),
        input_image_tokens=int(details.get("image_tokens") or 0),
    )


def _kind(generation: gen.Generation) -> gen.GenerationKind.ValueType:
    kind = generation.params.kind or gen.GENERATION_KIND_GENERATE
    if kind not in (gen.GENERATION_KIND_GENERATE, gen.GENERATION_KIND_EDIT, gen.GENERATION_KIND_VARIATION):
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"openai does not do {gen.GenerationKind.Name(kind)}")
    return kind


class OpenAIProvider(Provider):
    name = "openai"
    settings_type = OpenAISettings
    settings: OpenAISettings

    @staticmethod
    def headers(settings: OpenAISettings) -> dict[str, str]:
        return {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"}

    @staticmethod
    def classify(response: httpx.Response) -> ProviderError | None:
        return refusal(_json_or_none(response))

    async def run(self, generation: gen.Generation, progress: Progress, clock: JobClock) -> ProviderResult:
        model = self.settings.models.get(generation.model, generation.model)
        family = family_of(model)
        kind = _kind(generation)
        fields = fields_for(generation, family, model, kind=kind, response_format=self.settings.dalle_response_format)
        if kind == gen.GENERATION_KIND_GENERATE:
            request: dict[str, Any] = {"json": fields}
            path = "/images/generations"
        else:
            files = await self._files(generation, family, kind)
            request = {"data": {k: _form_value(v) for k, v in fields.items()}, "files": files}
            path = "/images/edits" if kind == gen.GENERATION_KIND_EDIT else "/images/variations"
        if fields.get("stream"):
            return await self._streamed(generation, progress, path, request)
        response = await self.http.request("POST", path, **request)
        _name_call(response, progress)
        body = _json_or_none(response)
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "openai answered without a data list")
        images = []
        wanted = generation.params.n or 1
        target = _conversion_target(generation, family, body.get("output_format"))
        for index, item in enumerate(body["data"][:wanted]):
            data = await self._bytes_of(item)
            images.append(await deliver(data, target, self.name, revised_prompt=item.get("revised_prompt") or ""))
            await progress(100.0 * (index + 1) / min(wanted, len(body["data"])))
        if not images:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "openai answered with no image")
        return ProviderResult(images, usage=usage_of(body))

    async def _streamed(
        self, generation: gen.Generation, progress: Progress, path: str, request: dict
    ) -> ProviderResult:
        """Partial images as progress, completed events as results. Progress runs from image
        to image: image k's partials fill (k, k+1) of n, its completed event reaches k+1."""
        wanted = generation.params.n or 1
        steps = max(0, min(3, generation.params.partial_images)) + 1
        images: list[GeneratedImage] = []
        usage: gen.Usage | None = None
        partials = 0
        async with open_stream(self.http, "POST", path, **request) as response:
            _name_call(response, progress)
            async for event in events(response, self.name):
                body = event.json()
                if "error" in body or event.event == "error":
                    raise refusal(body) or ProviderError(
                        ErrorCode.PROVIDER_ERROR, f"openai failed mid-stream: {self.http.scrub(_message(body))}"
                    )
                kind = str(body.get("type") or event.event)
                target = _conversion_target(generation, Family.GPT, body.get("output_format"))
                if kind.endswith(".partial_image"):
                    partials = min(partials + 1, steps - 1)
                    partial = await deliver(decode_b64(body.get("b64_json") or "", self.name), target, self.name)
                    await progress(100.0 * (len(images) + partials / steps) / wanted, partial)
                elif kind.endswith(".completed") and len(images) < wanted:
                    images.append(await deliver(decode_b64(body.get("b64_json") or "", self.name), target, self.name))
                    usage = usage_of(body) or usage
                    partials = 0
                    await progress(100.0 * len(images) / wanted)
        if not images:
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "openai ended the stream without an image")
        return ProviderResult(images, usage=usage)

    async def _bytes_of(self, item: object) -> bytes:
        if not isinstance(item, dict):
            raise ProviderError(ErrorCode.PROVIDER_ERROR, "openai answered with a malformed image entry")
        if item.get("b64_json"):
            return decode_b64(item["b64_json"], self.name)
        if item.get("url"):
            return await self.http.download(item["url"], self.settings.download_max_bytes)
        raise ProviderError(ErrorCode.PROVIDER_ERROR, "openai answered with an image that has neither b64_json nor url")

    async def _files(
        self, generation: gen.Generation, family: Family, kind: gen.GenerationKind.ValueType
    ) -> list[tuple[str, tuple[str, bytes, str]]]:
        """The multipart file parts of an edit (image / image[] + mask) or a variation (image)."""
        if family is Family.DALLE3:
            raise ProviderError(ErrorCode.INVALID_REQUEST, "dall-e-3 does not do edits or variations")
        if kind == gen.GENERATION_KIND_VARIATION and family is not Family.DALLE2:
            raise ProviderError(ErrorCode.INVALID_REQUEST, "only dall-e-2 makes variations")
        inputs = await self.inputs.load(generation)
        images = [i for i in inputs if i.role != "mask"]
        masks = [i for i in inputs if i.role == "mask"]
        if not images:
            raise ProviderError(ErrorCode.INVALID_REQUEST, "an edit or variation needs an input image")
        single = family is Family.DALLE2
        if single and len(images) > 1:
            raise ProviderError(ErrorCode.INVALID_REQUEST, "dall-e-2 takes one input image")
        if single:
            images = [await as_png(images[0])]
        elif len(images) > 16:
            raise ProviderError(ErrorCode.INVALID_REQUEST, "at most 16 input images")
        else:
            images = [i if i.image_format in ("PNG", "JPEG", "WEBP") else await as_png(i) for i in images]
        field = "image" if len(images) == 1 else "image[]"
        files = [(field, _part(i)) for i in images]
        if masks and kind == gen.GENERATION_KIND_EDIT:
            files.append(("mask", _part(await as_png(masks[0], rgba=True))))
        return files


def _part(item: InputFile) -> tuple[str, bytes, str]:
    return (item.filename, item.data, item.mime_type)


def _form_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _conversion_target(generation: gen.Generation, family: Family, produced_format: object) -> gen.Generation:
    """What `deliver` converts against: a GPT image model that already encoded the asked
    lossy format with the asked compression is not re-encoded (that would compress twice)."""
    fmt = formats.of(generation.output_format).name
    honoured = family is Family.GPT and (produced_format in (None, fmt)) and fmt in LOSSY
    if not honoured or not generation.params.HasField("output_compression"):
        return generation
    copy = gen.Generation()
    copy.CopyFrom(generation)
    copy.params.ClearField("output_compression")
    return copy


def _name_call(response: httpx.Response, progress: Progress) -> None:
    if request_id := response.headers.get("x-request-id"):
        progress.upstream(request_id)


def _json_or_none(response: httpx.Response) -> object:
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        return None


def _message(body: dict) -> str:
    err = body.get("error")
    if isinstance(err, dict):
        return str(err.get("message") or err.get("code") or "unknown error")[:300]
    return str(err)[:300]
