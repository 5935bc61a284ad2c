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


async def openai_images(mesh: Mesh, generation: gen.Generation, response_format: str, started: float) -> dict:
    """The ImagesResponse of a succeeded generation, with seed 004's `perf` block."""
    if response_format == "b64_json":
        blobs = await asyncio.gather(*(mesh.image_b64(ref) for ref in generation.images))
        data = [{"b64_json": b, "revised_prompt": ref.revised_prompt or None} for b, ref in zip(blobs, generation.images, strict=True)]
    else:
        urls = await asyncio.gather(*(mesh.image_url(ref) for ref in generation.images))
        data = [{"url": u, "revised_prompt": ref.revised_prompt or None} for u, ref in zip(urls, generation.images, strict=True)]
    size = f"{generation.width}x{generation.height}"
    return {
        "created": generation.create_time.seconds or int(time.time()),
        "data": data,
        "output_format": formats.of(generation.output_format).name,
        "quality": generation.quality,
        "size": size,
        "perf": {
            "request_id": generation.id,
            "model_used": generation.model,
            "size": size,
            "quality": generation.quality,
            "cost_usd": _usd(generation.cost),
            "latency_ms": int((time.monotonic() - started) * 1000),
        },
    }


async def v2_generation(mesh: Mesh, generation: gen.Generation) -> dict:
    """Seed 000's generation object (see svckit.shapes: webhooks POST the same JSON)."""
    urls: list[str] = []
    if generation.state == gen.GENERATION_STATE_SUCCEEDED:
        urls = list(await asyncio.gather(*(mesh.image_url(ref) for ref in generation.images)))
    return shapes.v2_generation(generation, urls)
