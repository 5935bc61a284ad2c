"""bfl: the gateway's generation -> BFL request body, and where the key may go."""

from __future__ import annotations

import functools

import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from services.worker.tests.support import generation
from svckit.errors import ErrorCode
from worker.providers import ProviderError
from worker.providers.bfl import MODELS, BflProvider, BflSettings, request_body

g = functools.partial(generation, seed=7)


def test_pixel_models_send_width_and_height() -> None:
    body = request_body(g("flux-1.1-pro", 1536, 1024), MODELS["flux-1.1-pro"], 2)
    assert body == {
        "prompt": "p",
        "seed": 7,
        "safety_tolerance": 2,
        "output_format": "png",
        "width": 1440,
        "height": 960,
    }


def test_aspect_models_send_an_aspect_ratio() -> None:
    body = request_body(g("flux-kontext-pro", 768, 1344, gen.OUTPUT_FORMAT_JPEG), MODELS["flux-kontext-pro"], 6, "aGk=")
    assert body["aspect_ratio"] == "4:7" and "width" not in body
    assert body["output_format"] == "jpeg"
    assert body["input_image"] == "aGk=" and body["safety_tolerance"] == 2  # at most 2 with an input image


@pytest.mark.parametrize(
    ("generation", "model"),
    [
        (g("flux-dev", negative_prompt="x"), "flux-dev"),
        (g("flux-dev", kind=gen.GENERATION_KIND_BLEND), "flux-dev"),
        (g("flux-dev", kind=gen.GENERATION_KIND_EDIT), "flux-dev"),
        (g("flux-kontext-pro", kind=gen.GENERATION_KIND_EDIT), "flux-kontext-pro"),  # an edit needs its image
    ],
)
def test_requests_bfl_cannot_do_are_refused(generation, model) -> None:
    with pytest.raises(ProviderError) as exc:
        request_body(generation, MODELS[model], 2)
    assert exc.value.code is ErrorCode.INVALID_REQUEST and not exc.value.retryable


@pytest.mark.parametrize(
    ("base", "url", "trusted"),
    [
        ("https://api.bfl.ai", "https://api.eu.bfl.ai/v1/get_result?id=1", True),
        ("https://api.bfl.ai", "https://api.bfl.ai/v1/get_result?id=1", True),
        ("https://api.bfl.ai", "https://evil.example/v1/get_result?id=1", False),
        ("https://api.bfl.ai", "https://bfl.ai.evil.example/x", False),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000/eu/v1/get_result?id=1", True),
        ("http://127.0.0.1:9000", "http://10.0.0.1/v1/get_result?id=1", False),
    ],
)
async def test_the_key_only_goes_to_bfl_hosts(base, url, trusted) -> None:
    provider = BflProvider.build(BflSettings(BFL_API_KEY="k", BFL_BASE_URL=base))
    try:
        assert provider._trusted(url) is trusted
    finally:
        await provider.close()
