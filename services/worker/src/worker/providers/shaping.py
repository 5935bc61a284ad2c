"""Request shaping several adapters share: sizes, aspect ratios, seeds, prompts.

The catalog promises pixel sizes (1366x768, 1536x1024, ...) that an upstream may not
make natively (BFL: 256-1440, multiples of 32; some models take an aspect ratio only).
The adapter asks the upstream for the nearest size it makes, with the same aspect ratio,
and `images.deliver(..., exact_size=True)` resizes the result to the promised size.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import Any, TypeVar, overload

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from worker.providers.base import ProviderError

T = TypeVar("T")
RATIO = re.compile(r"^(\d+)\s*[:x]\s*(\d+)$")


def requested_ratio(generation: gen.Generation) -> tuple[int, int]:
    """The aspect ratio the client asked for: its "W:H" size if it gave one, else width:height."""
    if m := RATIO.match(generation.params.size or ""):
        w, h = int(m.group(1)), int(m.group(2))
        if w and h and max(w, h) <= 64:  # "16:9", not "1024x768"
            return w, h
    return generation.width or 1, generation.height or 1


# Google's resolution tiers (Gemini's imageSize, Imagen's sampleImageSize) by the longest
# side they cover: a requested size picks the smallest tier that reaches it.
RESOLUTION_TIERS = (("1K", 1600), ("2K", 3200), ("4K", math.inf))


def resolution_tier(generation: gen.Generation) -> str:
    """The 1K / 2K / 4K tier of the generation's pixel size (its longer side)."""
    longest = max(generation.width, generation.height)
    return next(tier for tier, side in RESOLUTION_TIERS if longest <= side)


def colon_ratio(choice: str) -> tuple[int, int]:
    w, h = choice.split(":")
    return int(w), int(h)


# Without `ratio_of` the choices are "W:H" strings (colon_ratio reads them); with it, anything it reads.
@overload
def nearest_ratio(width: int, height: int, choices: Iterable[str]) -> str: ...
@overload
def nearest_ratio(width: int, height: int, choices: Iterable[T], ratio_of: Callable[[T], tuple[int, int]]) -> T: ...
def nearest_ratio(
    width: int,
    height: int,
    choices: Iterable[Any],
    ratio_of: Callable[[Any], tuple[int, int]] = colon_ratio,
) -> Any:
    """The choice ("16:9", ..., or whatever `ratio_of` reads as (w, h)) closest to width/height, in log space."""
    target = math.log(width / height)

    def distance(choice: Any) -> float:
        w, h = ratio_of(choice)
        return abs(math.log(w / h) - target)

    return min(choices, key=distance)


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


def seed_within(generation: gen.Generation, maximum: int) -> int:
    """The generation's resolved seed folded into an upstream's range [0, maximum]."""
    return generation.seed % (maximum + 1)


def non_empty_prompt(generation: gen.Generation, provider: str) -> str:
    if not generation.params.prompt.strip():
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"{provider} needs a prompt")
    return generation.params.prompt
