"""Generations rendered in each API's response shape (OpenAI, seed 000/004 aggregators)."""

from __future__ import annotations

import asyncio
import time

from edge.mesh import Mesh
from pixelmesh.common.v1 import generation_pb2 as gen
from svckit import formats, shapes
from svckit.errors import ErrorCode, GatewayError


def failure(generation: gen.Generation) -> GatewayError:
    try:
        code = ErrorCode(generation.error.code)
    except ValueError:
        code = ErrorCode.INTERNAL
    if generation.state == gen.GENERATION_STATE_CANCELLED:
        code = ErrorCode.CANCELLED
    return GatewayError(code, generation.error.message or "The generation failed.", generation_id=generation.id)


def _usd(cost: gen.Cost) -> float:
    return round(cost.usd_micros / 1_000_000, 6)


def usage(generation: gen.Generation) -> dict | None:
    """OpenAI's `usage` of token-priced models (seed 001), from the worker's report."""
    u = generation.usage
    if not (u.total_tokens or u.input_tokens or u.output_tokens):
        return None
    return {
        "total_tokens": u.total_tokens or u.input_tokens + u.output_tokens,
        "input_tokens": u.input_tokens,
        "output_tokens": u.output_tokens,
        "input_tokens_details": {"text_tokens": u.input_text_tokens, "image_tokens": u.input_image_tokens},
    }


def size_of(generation: gen.Generation) -> str:
    return f"{generation.width}x{generation.height}"


async def openai_images(mesh: Mesh, generation: gen.Generation, response_format: str, started: float) -> dict:
    """The ImagesResponse of a succeeded generation, with seed 004's `perf` block and seed 000's cost fields."""
    if response_format == "b64_json":
        blobs = await asyncio.gather(*(mesh.image_b64(ref) for ref in generation.images))
        data = [
            {"b64_json": b, "revised_prompt": ref.revised_prompt or None}
            for b, ref in zip(blobs, generation.images, strict=True)
        ]
    else:
        urls = await asyncio.gather(*(mesh.image_url(ref) for ref in generation.images))
        data = [
            {"url": u, "revised_prompt": ref.revised_prompt or None}
            for u, ref in zip(urls, generation.images, strict=True)
        ]
    size = size_of(generation)
    body: dict[str, object] = {
        "created": generation.create_time.seconds or int(time.time()),
        "data": data,
        "output_format": formats.of(generation.output_format).name,
        "quality": generation.quality,
        "size": size,
    }
    if generation.params.background in ("transparent", "opaque"):
        body["background"] = generation.params.background
    if (used := usage(generation)) is not None:
        body["usage"] = used
    body.update(
        {
            "id": generation.id,
            "model": generation.model,
            "seed": generation.seed,
            "tokens_spent": generation.cost.tokens,
            "cost_usd": _usd(generation.cost),
            "perf": {
                "request_id": generation.id,
                "model_used": generation.model,
                "size": size,
                "quality": generation.quality,
                "cost_usd": _usd(generation.cost),
                "latency_ms": int((time.monotonic() - started) * 1000),
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
        event["usage"] = usage(generation) or {
            "total_tokens": 0,
            "input_tokens": 0,
            "output_tokens": 0,
            "input_tokens_details": {"text_tokens": 0, "image_tokens": 0},
        }
        event["id"] = generation.id
        event["tokens_spent"] = generation.cost.tokens
        event["cost_usd"] = _usd(generation.cost)
    return event


async def v2_generation(mesh: Mesh, generation: gen.Generation) -> dict:
    """Seed 000's generation object (see svckit.shapes: webhooks POST the same JSON)."""
    urls: list[str] = []
    if generation.state == gen.GENERATION_STATE_SUCCEEDED:
        urls = list(await asyncio.gather(*(mesh.image_url(ref) for ref in generation.images)))
    return shapes.v2_generation(generation, urls)
