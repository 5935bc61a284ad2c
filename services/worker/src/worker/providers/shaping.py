"""Small rules several adapters share: job deadlines, aspect ratios, seeds, result counts."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.errors import ErrorCode
from worker.providers.base import ProviderError

T = TypeVar("T")
RATIO = re.compile(r"^(\d+)\s*[:x]\s*(\d+)$")


async def within_job_timeout(work: Awaitable[T], seconds: float, provider: str) -> T:
    """The adapter's whole job, abandoned (retryably: another route may be quicker) after `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:
        raise ProviderError(
            ErrorCode.TIMEOUT, f"{provider} did not finish within {seconds:.0f} s", retryable=True
        ) from None


def requested_ratio(generation: gen.Generation) -> tuple[int, int]:
    """The aspect ratio the client asked for: its "W:H" size if it gave one, else width:height."""
    if m := RATIO.match(generation.params.size or ""):
        w, h = int(m.group(1)), int(m.group(2))
        if w and h and max(w, h) <= 64:  # "16:9", not "1024x768"
            return w, h
    return generation.width or 1, generation.height or 1


def nearest_ratio(generation: gen.Generation, choices: Iterable[T], ratio_of: Callable[[T], tuple[int, int]]) -> T:
    """The choice whose aspect ratio (`ratio_of(choice) -> (w, h)`) is closest to the request's."""
    w, h = requested_ratio(generation)
    want = math.log(w / h)
    return min(choices, key=lambda c: abs(math.log(ratio_of(c)[0] / ratio_of(c)[1]) - want))


def seed_within(generation: gen.Generation, maximum: int) -> int:
    """The generation's resolved seed folded into an upstream's range [0, maximum]."""
    return generation.seed % (maximum + 1)


def wanted(generation: gen.Generation) -> int:
    return generation.params.n or 1


def non_empty_prompt(generation: gen.Generation, provider: str) -> str:
    if not generation.params.prompt.strip():
        raise ProviderError(ErrorCode.INVALID_REQUEST, f"{provider} needs a prompt")
    return generation.params.prompt


async def all_or_first_error(coros: list[Awaitable[T]]) -> list[T]:
    """Run concurrently, results in order; the first failure cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
