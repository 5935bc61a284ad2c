"""OpenAI's Images API shapes: the ImagesResponse of a succeeded generation and the
events of a streamed one (`image_generation.*` / `image_edit.*`).

Field by field as OpenAI's own schema (the openai SDK's `ImagesResponse`, `Image` and
stream event types): an optional field this gateway has no value for is omitted, never
null; `quality` says only a quality that was used (a request's "auto" names none);
`background` only transparent or opaque. This gateway's own fields (id, model, seed,
tokens_spent, cost_usd, perf) come after OpenAI's.
"""

from __future__ import annotations

import time

from pixelmesh.common.v1 import generation_pb2 as gen
from presenters.generation import usd
from svckit import formats


def usage(generation: gen.Generation) -> dict | None:
    """OpenAI's `usage` of token-priced models (the images reference), from the worker's report."""
    u = generation.usage
    if not (u.total_tokens or u.input_tokens or u.output_tokens):
        return None
    return {
        "total_tokens": u.total_tokens or u.input_tokens + u.output_tokens,
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "input_tokens_details": {"text_tokens": u.input_text_tokens, "image_tokens": u.input_image_tokens},
    }


# What ImagesResponse.quality may say: the quality a GPT image model used, or DALL·E's.
USED_QUALITIES = frozenset({"low", "medium", "high", "xhigh", "max", "standard", "hd"})
USED_BACKGROUNDS = frozenset({"transparent", "opaque"})


def size_of(generation: gen.Generation) -> str:
    return f"{generation.width}x{generation.height}"


def images_response(generation: gen.Generation, images: list[str], response_format: str, latency_ms: int) -> dict:
    """The ImagesResponse of a succeeded generation (`images`: its URLs, or its base64 for
    b64_json), with the perf API's `perf` block and the v2 API's cost fields."""
    key = "b64_json" if response_format == "b64_json" else "url"
    data: list[dict[str, str]] = []
    for image, ref in zip(images, generation.images, strict=True):
        item = {key: image}
        if ref.revised_prompt:
            item["revised_prompt"] = ref.revised_prompt
        data.append(item)
    size = size_of(generation)
    body: dict[str, object] = {"created": generation.create_time.seconds or int(time.time()), "data": data}
    if generation.params.background in USED_BACKGROUNDS:
        body["background"] = generation.params.background
    body["output_format"] = formats.of(generation.output_format).name
    if generation.quality in USED_QUALITIES:
        body["quality"] = generation.quality
    body["size"] = size
    if generation.params.user:
        body["safety_identifier"] = generation.params.user
    if (used := usage(generation)) is not None:
        body["usage"] = used
    cost_usd = usd(generation.cost.usd_micros)
    body.update(
        {
            "id": generation.id,
            "model": generation.model,
            "seed": generation.seed,
            "tokens_spent": generation.cost.tokens,
            "cost_usd": cost_usd,
            "perf": {
                "request_id": generation.id,
                "model_used": generation.model,
                "size": size,
                "quality": generation.quality,
                "cost_usd": cost_usd,
                "latency_ms": latency_ms,
            },
        }
    )
    return body


def stream_event(kind: str, generation: gen.Generation, b64: str, *, partial_index: int | None = None) -> dict:
    """One SSE payload of OpenAI's streaming Images API: `<kind>.partial_image` or `<kind>.completed`
    (kind is image_generation or image_edit)."""
    event: dict[str, object] = {
        "type": f"{kind}.partial_image" if partial_index is not None else f"{kind}.completed",
        "b64_json": b64,
        "background": generation.params.background or "auto",
        "created_at": int(time.time()),
        "output_format": formats.of(generation.output_format).name,
        "quality": generation.quality,
        "size": size_of(generation),
    }
    if partial_index is not None:
        event["partial_image_index"] = partial_index
    else:
        if generation.params.user:
            event["safety_identifier"] = generation.params.user
        event["usage"] = usage(generation) or {
            "total_tokens": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "input_tokens_details": {"text_tokens": 0, "image_tokens": 0},
        }
        event["id"] = generation.id
        event["tokens_spent"] = generation.cost.tokens
        event["cost_usd"] = usd(generation.cost.usd_micros)
    return event
