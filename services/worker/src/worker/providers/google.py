"""Google's image models on the Gemini API, through `models/{model}:generateContent`.

docs/provider-contracts-2.md §14 (which replaces part 1's §8): Imagen is shut down on the
Gemini API (and deprecated on Vertex AI, whose docs say to move to gemini-2.5-flash-image);
the current image models answer `generateContent`:
- `POST {base}/models/{model}:generateContent`, `x-goog-api-key`; body `contents[].parts[]`
  of `text` and `inlineData {mimeType, data}`, `generationConfig.responseModalities` and
  `generationConfig.imageConfig.aspectRatio` (1:1, 2:3, 3:2, 3:4, 4:3, 9:16, 16:9, 21:9).
- Models (GA): gemini-3.1-flash-image, gemini-3-pro-image, gemini-3.1-flash-lite-image,
  gemini-2.5-flash-image. The previews gemini-3.1-flash-image-preview and
  gemini-3-pro-image-preview were shut down on 2026-06-25 (gemini-2.5-flash-image-preview
  in 2026-01): refused before any call, naming the GA model. Shutdown dates move: other
  names come from GOOGLE_MODELS (catalog id -> Gemini model).
- Response `candidates[0].content.parts[].inlineData` (base64 images, maybe beside text),
  `finishReason`, `promptFeedback.blockReason` with no candidates when the prompt is
  blocked, `usageMetadata` token counts, `responseId`. Blocked output is still HTTP 200:
  a candidate without `inlineData` (IMAGE_SAFETY, IMAGE_OTHER, NO_IMAGE, SAFETY, ... or text
  only) is a content-policy failure, as the contract says to treat it.
- Errors are Google RPC errors `{"error": {code, message, status, details}}`; a bad key is
  a 400 INVALID_ARGUMENT whose ErrorInfo reason is API_KEY_INVALID; 429 RESOURCE_EXHAUSTED.

Mapping: a blocked prompt or a candidate without an image is a content-policy violation
(no retry); an answer without any candidate is a PROVIDER_ERROR; a bad key is
PROVIDER_AUTH; 429 and 5xx are retried. One call makes one image, so `n` images are `n`
concurrent calls; token usage is summed into Usage. Input images (edits, image_url) go as
inlineData parts before the prompt; masks are not supported by these models. Seeds are
not sent (not documented for image output).

`imageSize` follows the requested pixel size (`shaping.resolution_tier`): a longer side up to 1600 px is
1K (Google's default, not sent), up to 3200 px 2K, beyond that 4K; the catalog lists the 2K
and 4K sizes only for the models that take them (gemini-3-pro-image, gemini-3.1-flash-image;
gemini-3.1-flash-lite-image and gemini-2.5-flash-image make 1K). Results are delivered at
the promised pixel size (`exact_size`: Google's own sizes per ratio differ by a few pixels
between models). The client's `provider_options` (e.g. `personGeneration`) are merged
into `generationConfig.imageConfig`.
"""

from __future__ import annotations

import base64

import httpx
from pydantic import Field, SecretStr

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from worker.providers.adapter import JobClock, Provider, all_or_first_error
from worker.providers.base import GeneratedImage, Progress, ProviderError, ProviderResult
from worker.providers.images import decode_b64, deliver
from worker.providers.options import provider_options
from worker.providers.settings import UpstreamSettings
from worker.providers.shaping import nearest_ratio, non_empty_prompt, requested_ratio, resolution_tier

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9", "21:9")
# Shut down upstream -> the GA model that replaced it (§14).
SHUT_DOWN = {
    "gemini-3.1-flash-image-preview": "gemini-3.1-flash-image",
    "gemini-3-pro-image-preview": "gemini-3-pro-image",
    "gemini-2.5-flash-image-preview": "gemini-2.5-flash-image",
}
REFUSED_FINISH = frozenset(
    {
        "SAFETY",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "RECITATION",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)


class GoogleSettings(UpstreamSettings):
    api_key: SecretStr = Field(validation_alias="GOOGLE_API_KEY")
    base_url: str = Field("https://generativelanguage.googleapis.com/v1beta", validation_alias="GOOGLE_BASE_URL")
    # Catalog model id -> Gemini model name, where they differ (JSON object).
    models: dict[str, str] = Field(default_factory=dict, validation_alias="GOOGLE_MODELS")


def upstream_model(model: str, models: dict[str, str]) -> str:
    name = models.get(model, model)
    if name.startswith("imagen"):
        raise ProviderError(
            ErrorCode.INVALID_REQUEST, f"{name} ran on Imagen's :predict, which the Gemini API has shut down"
        )
    if name in SHUT_DOWN:
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"google shut {name} down; its successor is {SHUT_DOWN[name]}")
    if not (name.startswith("gemini-") and "image" in name):
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"the google adapter does not serve the model {model!r}")
    return name


def takes_image_size(name: str) -> bool:
    """The Gemini 3 image models take imageSize 2K/4K; Flash-Lite makes 1K only."""
    return name.startswith("gemini-3") and "lite" not in name


def request_body(generation: gen.Generation, images: list[tuple[str, bytes]], model: str = "") -> dict:
    """One generateContent request: input images, then the prompt; image output only."""
    parts: list[dict] = [
        {"inlineData": {"mimeType": mime, "data": base64.b64encode(data).decode()}} for mime, data in images
    ]
    parts.append({"text": non_empty_prompt(generation, "google")})
    config: dict = {"aspectRatio": nearest_ratio(*requested_ratio(generation), ASPECT_RATIOS)}
    tier = resolution_tier(generation)
    if tier != "1K":
        if not takes_image_size(model):
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"{generation.model} makes 1K images only")
        config["imageSize"] = tier
    return {
        "contents": [{"role": "user", "parts": parts}],
        "generationConfig": {
            "responseModalities": ["IMAGE"],
            "imageConfig": {**config, **provider_options(generation)},
        },
    }


def image_of(body: object) -> tuple[bytes, str]:
    """The image of a generateContent answer (and any text the model added), or the
    classified reason there is none."""
    if not isinstance(body, dict):
        raise ProviderError(ErrorCode.PROVIDER_ERROR, "google answered with something that is not JSON")
    feedback = body.get("promptFeedback") or {}
    candidates = body.get("candidates") or []
    if feedback.get("blockReason") and not candidates:
        raise ProviderError(
            ErrorCode.CONTENT_POLICY_VIOLATION, f"google blocked the prompt (blockReason {feedback['blockReason']})"
        )
    if not candidates or not isinstance(candidates[0], dict):
        raise ProviderError(ErrorCode.PROVIDER_ERROR, "google answered without a candidate")
    candidate = candidates[0]
    parts = (candidate.get("content") or {}).get("parts") or []
    images = [p["inlineData"] for p in parts if isinstance(p, dict) and isinstance(p.get("inlineData"), dict)]
    text = " ".join(str(p["text"]) for p in parts if isinstance(p, dict) and p.get("text"))
    reason = str(candidate.get("finishReason") or "")
    if reason in REFUSED_FINISH:
        raise ProviderError(ErrorCode.CONTENT_POLICY_VIOLATION, f"google withheld the image (finishReason {reason})")
    if not images or not images[0].get("data"):
        detail = f"finishReason {reason}" if reason else "no finish reason"
        raise ProviderError(ErrorCode.CONTENT_POLICY_VIOLATION, f"google answered without an image ({detail})")
    return decode_b64(images[0]["data"], "google"), text


def usage_of(bodies: list[dict]) -> gen.Usage | None:
    """Token counts of every call, summed (`usageMetadata`)."""
    usage = gen.Usage()
    seen = False
    for body in bodies:
        meta = body.get("usageMetadata")
        if not isinstance(meta, dict):
            continue
        seen = True
        usage.input_tokens += int(meta.get("promptTokenCount") or 0)
        usage.output_tokens += int(meta.get("candidatesTokenCount") or 0)
        usage.total_tokens += int(meta.get("totalTokenCount") or 0)
        for detail in meta.get("promptTokensDetails") or []:
            if detail.get("modality") == "TEXT":
                usage.input_text_tokens += int(detail.get("tokenCount") or 0)
            elif detail.get("modality") == "IMAGE":
                usage.input_image_tokens += int(detail.get("tokenCount") or 0)
    return usage if seen else None


def classify(response: httpx.Response) -> ProviderError | None:
    """A rejected key comes back as 400 INVALID_ARGUMENT with reason API_KEY_INVALID."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return None
    details = error.get("details") if isinstance(error, dict) else None
    reasons = {d.get("reason") for d in details or [] if isinstance(d, dict)}
    if "API_KEY_INVALID" in reasons:
        return ProviderError(
            ErrorCode.PROVIDER_AUTH, "google refused the gateway's API key; the operator must check it", retryable=True
        )
    return None


class GoogleProvider(Provider):
    name = "google"
    settings_type = GoogleSettings
    settings: GoogleSettings

    @staticmethod
    def headers(settings: GoogleSettings) -> dict[str, str]:
        return {"x-goog-api-key": settings.api_key.get_secret_value()}

    classify = staticmethod(classify)

    async def run(self, generation: gen.Generation, progress: Progress, clock: JobClock) -> ProviderResult:
        model = upstream_model(generation.model, self.settings.models)
        kind = generation.params.kind or gen.GENERATION_KIND_GENERATE
        if kind not in (gen.GENERATION_KIND_GENERATE, gen.GENERATION_KIND_EDIT):
            raise ProviderError(ErrorCode.INVALID_REQUEST, f"google does not do {gen.GenerationKind.Name(kind)}")
        inputs = await self.inputs.load(generation)
        if any(i.role == "mask" for i in inputs):
            raise ProviderError(
                ErrorCode.INVALID_REQUEST, f"{generation.model} edits from the prompt; it takes no mask"
            )
        if kind == gen.GENERATION_KIND_EDIT and not inputs:
            raise ProviderError(ErrorCode.INVALID_REQUEST, "an edit needs an input image")
        body = request_body(generation, [(i.mime_type, i.data) for i in inputs], model)
        n = generation.params.n or 1
        answers: list[dict] = []

        async def one(index: int) -> GeneratedImage:
            response = await self.http.request("POST", f"/models/{model}:generateContent", json=body)
            try:
                answer = response.json()
            except ValueError:
                answer = None
            if index == 0 and isinstance(answer, dict) and answer.get("responseId"):
                progress.upstream(str(answer["responseId"]))
            data, _text = image_of(answer)
            answers.append(answer)
            image = await deliver(data, generation, self.name, exact_size=True)
            await progress(100.0 * len(answers) / n)
            return image

        images = await all_or_first_error([one(i) for i in range(n)])
        return ProviderResult(images, usage=usage_of(answers))
