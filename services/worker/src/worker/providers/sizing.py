"""Sizes between the gateway and upstreams with their own rules.

The catalog promises pixel sizes (1366x768, 1536x1024, ...) that an upstream may not
make natively (BFL: 256-1440, multiples of 32; some models take an aspect ratio only).
The adapter asks the upstream for the nearest size it makes, with the same aspect ratio,
and `deliver` resizes the result to the size the client was promised before converting
it to the requested format.
"""

from __future__ import annotations

import asyncio
import io
import math
from fractions import Fraction

from PIL import Image, UnidentifiedImageError

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from worker.providers.base import GeneratedImage, ProviderError
from worker.providers.images import MAX_PIXELS, to_requested


def fit(width: int, height: int, *, lo: int, hi: int, step: int) -> tuple[int, int]:
    """The size nearest width x height with both sides in [lo, hi], multiples of step, same aspect."""
    scale = min(1.0, hi / max(width, height))
    scale = max(scale, lo / min(width, height)) if min(width, height) * scale < lo else scale

    def side(value: float) -> int:
        return max(lo, min(hi, int(round(value / step)) * step))

    return side(width * scale), side(height * scale)


def aspect_ratio(width: int, height: int, *, widest: Fraction | None = None) -> str:
    """ "W:H" of a pixel size, reduced (1344x768 -> "7:4"); clamped to [1/widest, widest]."""
    ratio = Fraction(width, height)
    if widest is not None:
        ratio = max(1 / widest, min(widest, ratio))
    return f"{ratio.numerator}:{ratio.denominator}"


def nearest_ratio(width: int, height: int, choices: list[str]) -> str:
    """The choice ("16:9", ...) whose ratio is closest to width/height (in log space)."""
    target = math.log(width / height)

    def distance(choice: str) -> float:
        w, h = (int(x) for x in choice.split(":"))
        return abs(math.log(w / h) - target)

    return min(choices, key=distance)


def _resize(data: bytes, width: int, height: int, provider: str) -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.width * probe.height > MAX_PIXELS:
                raise ProviderError(
                    ErrorCode.PROVIDER_ERROR, f"{provider} returned an image larger than {MAX_PIXELS} pixels"
                )
            if (probe.width, probe.height) == (width, height):
                return data
            image = probe.convert("RGBA" if "A" in probe.getbands() else "RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ProviderError(ErrorCode.PROVIDER_ERROR, f"{provider} returned bytes that are not an image") from exc
    out = io.BytesIO()
    image.resize((width, height), Image.Resampling.LANCZOS).save(out, "PNG", compress_level=1)
    return out.getvalue()


async def deliver(data: bytes, generation: gen.Generation, provider: str, *, exact_size: bool = True) -> GeneratedImage:
    """Upstream bytes -> the generation's size (when exact_size) and requested format."""
    if exact_size and generation.width and generation.height:
        data = await asyncio.to_thread(_resize, data, generation.width, generation.height, provider)
    return await to_requested(data, generation, provider)
