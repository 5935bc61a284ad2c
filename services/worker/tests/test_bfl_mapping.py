"""bfl: the gateway's generation -> BFL request body, and where the key may go."""

from __future__ import annotations

import functools

import pytest
from google.protobuf.struct_pb2 import Struct

from pixelmesh.common.v1 import generation_pb2 as gen
from services.worker.tests.support import generation
from svckit.errors import ErrorCode
from worker.providers import ProviderError
from worker.providers.bfl import MODELS, BflProvider, BflSettings, flux2_size, request_body

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
    body = request_body(
        g("flux-kontext-pro", 768, 1344, gen.OUTPUT_FORMAT_JPEG), MODELS["flux-kontext-pro"], 6, ["aGk="]
    )
    assert body["aspect_ratio"] == "4:7" and "width" not in body
    assert body["output_format"] == "jpeg"
    assert body["input_image"] == "aGk=" and body["safety_tolerance"] == 2  # at most 2 with an input image


def options(**values) -> Struct:
    struct = Struct()
    struct.update(values)
    return struct


def test_flux_2_sends_width_height_and_every_reference_in_order() -> None:
    refs = [f"https://img.example/{i}.png" for i in range(8)]
    body = request_body(g("flux-2-pro", 1920, 1088, gen.OUTPUT_FORMAT_WEBP), MODELS["flux-2-pro"], 2, refs)
    assert (body["width"], body["height"], body["output_format"]) == (1920, 1088, "webp")
    assert [body[k] for k in ["input_image"] + [f"input_image_{i}" for i in range(2, 9)]] == refs
    assert "guidance" not in body and "aspect_ratio" not in body


def test_flux_2_sizes_stay_within_4_megapixels_in_multiples_of_16() -> None:
    assert flux2_size(1024, 1024) == (1024, 1024)
    width, height = flux2_size(4096, 2304)
    assert width * height <= 4_194_304 and width % 16 == 0 and height % 16 == 0 and width > 2600
    assert flux2_size(64, 64) == (64, 64)


def test_flux_2_flex_always_sends_a_guidance_and_takes_the_clients() -> None:
    assert request_body(g("flux-2-flex"), MODELS["flux-2-flex"], 2)["guidance"] == 5.0
    asked = g("flux-2-flex", provider_options=options(guidance=3.5, steps=20))
    body = request_body(asked, MODELS["flux-2-flex"], 2)
    assert (body["guidance"], body["steps"]) == (3.5, 20) and isinstance(body["steps"], int)


def test_the_clients_safety_tolerance_stays_within_the_models_range_and_2_with_images() -> None:
    asked = g("flux-2-pro", provider_options=options(safety_tolerance=5, prompt_upsampling=True))
    body = request_body(asked, MODELS["flux-2-pro"], 2)
    assert (body["safety_tolerance"], body["prompt_upsampling"]) == (5, True)
    assert request_body(asked, MODELS["flux-2-pro"], 2, ["aGk="])["safety_tolerance"] == 2
    assert request_body(g("flux-2-pro"), MODELS["flux-2-pro"], 6)["safety_tolerance"] == 5  # FLUX.2: 0-5


def test_a_transparent_background_is_asked_of_flux_2_as_png() -> None:
    body = request_body(g("flux-2-klein-4b", background="transparent"), MODELS["flux-2-klein-4b"], 2)
    assert (body["transparent_bg"], body["output_format"]) == (True, "png")
    with pytest.raises(ProviderError):
        request_body(g("flux-1.1-pro", background="transparent"), MODELS["flux-1.1-pro"], 2)


def test_ultra_sends_its_input_as_the_image_prompt_with_its_options() -> None:
    asked = g("flux-1.1-pro-ultra", 2752, 1536, provider_options=options(raw=True, image_prompt_strength=0.4))
    body = request_body(asked, MODELS["flux-1.1-pro-ultra"], 2, ["aGk="])
    assert (body["aspect_ratio"], body["image_prompt"], body["raw"], body["image_prompt_strength"]) == (
        "43:24",
        "aGk=",
        True,
        0.4,
    )
    assert "input_image" not in body and "width" not in body


def test_more_references_than_the_model_takes_are_refused() -> None:
    with pytest.raises(ProviderError) as exc:
        request_body(g("flux-2-klein-4b"), MODELS["flux-2-klein-4b"], 2, ["aGk="] * 5)
    assert exc.value.code is ErrorCode.INVALID_REQUEST and "at most 4" in exc.value.message


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
