"""The Ideogram adapter's pure mapping and its in-flight image slots."""

from __future__ import annotations

import asyncio
import functools

import httpx
import pytest

from services.worker.tests.support import generation
from svckit.errors import ErrorCode
from worker.providers import ProviderError
from worker.providers.ideogram import MODELS, ImageSlots, refusal, request_fields

g = functools.partial(generation, prompt="a sign", size="1024x1024", seed=11)


@pytest.mark.parametrize(
    ("w", "h", "legacy", "v3"),
    [
        (1024, 1024, "ASPECT_1_1", "1x1"),
        (1344, 768, "ASPECT_16_9", "16x9"),
        (768, 1344, "ASPECT_9_16", "9x16"),
        (1024, 768, "ASPECT_4_3", "4x3"),
        (1152, 896, "ASPECT_4_3", "5x4"),
        (1280, 800, "ASPECT_16_10", "16x10"),
        (512, 1536, "ASPECT_1_3", "1x3"),
        (1536, 768, "ASPECT_16_9", "2x1"),
    ],
)
def test_aspect_ratios_per_endpoint(w, h, legacy, v3) -> None:
    assert request_fields(g("ideogram-v2", width=w, height=h), MODELS["ideogram-v2"], "")["aspect_ratio"] == legacy
    assert request_fields(g("ideogram-v3", width=w, height=h), MODELS["ideogram-v3"], "")["aspect_ratio"] == v3


def test_fields() -> None:
    legacy = request_fields(
        g("ideogram-v2-turbo", n=3, negative_prompt="blur", style="design"), MODELS["ideogram-v2-turbo"], "ON"
    )
    assert legacy == {
        "prompt": "a sign",
        "model": "V_2_TURBO",
        "aspect_ratio": "ASPECT_1_1",
        "seed": 11,
        "num_images": 3,
        "negative_prompt": "blur",
        "style_type": "DESIGN",
        "magic_prompt_option": "ON",
    }
    v3 = request_fields(g("ideogram-v3-quality", negative_prompt="blur"), MODELS["ideogram-v3-quality"], "")
    assert v3["rendering_speed"] == "QUALITY" and v3["negative_prompt"] == "blur" and "model" not in v3


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("ideogram-v1", {"style": "anime"}),
        ("ideogram-v2a", {"negative_prompt": "x"}),
        ("ideogram-v3", {"style": "anime"}),
        ("ideogram-v2", {"n": 9}),
    ],
)
def test_what_a_model_does_not_take_is_refused(model, params) -> None:
    with pytest.raises(ProviderError) as exc:
        request_fields(g(model, **params), MODELS[model], "")
    assert exc.value.code is ErrorCode.INVALID_REQUEST


def test_only_422_is_the_safety_check() -> None:
    err = refusal(httpx.Response(422, json={"error": "Prompt provided failed safety check"}))
    assert err.code is ErrorCode.CONTENT_POLICY_VIOLATION and "failed safety check" in err.message
    assert refusal(httpx.Response(429, json={"error": "x", "reject_reason": "inflight_limit"})) is None


async def test_slots_are_weighted_and_released() -> None:
    slots = ImageSlots(10)
    used_peak, running, running_peak = 0, 0, 0

    async def job(n: int) -> None:
        nonlocal used_peak, running, running_peak
        async with slots.hold(n):
            running += 1
            used_peak = max(used_peak, slots.capacity - slots.free)
            running_peak = max(running_peak, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(job(n) for n in (4, 4, 4, 8, 1, 3, 12)))  # 12 > capacity: it takes all 10
    assert used_peak == 10 and running_peak >= 2 and slots.free == 10
    with pytest.raises(RuntimeError):
        async with slots.hold(5):
            raise RuntimeError("failed upstream call")
    assert slots.free == 10
