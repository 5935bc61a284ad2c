"""replicate and fal: the gateway's generation -> model inputs, and their outputs and failures."""

from __future__ import annotations

import functools

import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from services.worker.tests.support import generation
from svckit.errors import ErrorCode
from worker.providers import ProviderError, fal, replicate

g = functools.partial(generation, seed=5)


def test_replicate_inputs() -> None:
    m = replicate.MODELS
    assert replicate.model_input(g("flux-1.1-pro", 1536, 1024, gen.OUTPUT_FORMAT_WEBP), m["flux-1.1-pro"]) == {
        "prompt": "p",
        "seed": 5,
        "output_format": "webp",
        "aspect_ratio": "custom",
        "width": 1440,
        "height": 960,
    }
    dev = replicate.model_input(g("flux-dev", 768, 1024, gen.OUTPUT_FORMAT_JPEG, n=4), m["flux-dev"])
    assert dev == {"prompt": "p", "seed": 5, "output_format": "jpg", "aspect_ratio": "3:4", "num_outputs": 4}
    kontext = replicate.model_input(
        g("flux-kontext-pro", fmt=gen.OUTPUT_FORMAT_WEBP), m["flux-kontext-pro"], "https://x/i.png"
    )
    assert (
        kontext["output_format"] == "png"
        and kontext["input_image"] == "https://x/i.png"
        and kontext["aspect_ratio"] == "1:1"
    )
    sdxl = replicate.model_input(
        g("stable-diffusion-xl", 1152, 896, n=2, negative_prompt="n"), m["stable-diffusion-xl"]
    )
    assert sdxl == {"prompt": "p", "seed": 5, "width": 1152, "height": 896, "num_outputs": 2, "negative_prompt": "n"}
    with pytest.raises(ProviderError):
        replicate.model_input(g("flux-dev", negative_prompt="n"), m["flux-dev"])
    with pytest.raises(ProviderError):
        replicate.model_input(g("flux-dev", kind=gen.GENERATION_KIND_DESCRIBE), m["flux-dev"])


def test_replicate_outputs_and_failures() -> None:
    assert replicate.outputs_of({"output": "https://r/a.webp"}) == ["https://r/a.webp"]
    assert replicate.outputs_of({"output": ["https://r/a", "https://r/b"]}) == ["https://r/a", "https://r/b"]
    assert replicate.outputs_of({"output": None, "data_removed": True}) == []
    nsfw = replicate.failure_of({"status": "failed", "error": "All generated images contained NSFW content"})
    assert nsfw.code is ErrorCode.CONTENT_POLICY_VIOLATION and not nsfw.retryable
    e005 = replicate.failure_of(
        {
            "status": "failed",
            "error": "The input or output was flagged as sensitive. Please try again with different inputs. (E005)",
        }
    )
    assert e005.code is ErrorCode.CONTENT_POLICY_VIOLATION
    oom = replicate.failure_of({"status": "failed", "error": "CUDA out of memory"})
    assert oom.code is ErrorCode.PROVIDER_ERROR and oom.retryable
    assert replicate.failure_of({"status": "canceled"}).code is ErrorCode.PROVIDER_ERROR


def test_fal_inputs() -> None:
    m = fal.MODELS
    pro = fal.model_input(g("flux-1.1-pro", 1536, 1024, gen.OUTPUT_FORMAT_JPEG, n=2), m["flux-1.1-pro"])
    assert pro == {
        "prompt": "p",
        "seed": 5,
        "num_images": 2,
        "output_format": "jpeg",
        "enable_safety_checker": True,
        "image_size": {"width": 1536, "height": 1024},
        "safety_tolerance": "2",
    }
    dev = fal.model_input(g("flux-dev", fmt=gen.OUTPUT_FORMAT_WEBP), m["flux-dev"])
    assert dev["output_format"] == "png" and dev["image_size"] == {"width": 1024, "height": 1024}
    kontext = fal.model_input(g("flux-kontext-pro", 1344, 768), m["flux-kontext-pro"], "data:image/png;base64,aGk=")
    assert (
        kontext["image_url"] == "data:image/png;base64,aGk="
        and kontext["aspect_ratio"] == "16:9"
        and "image_size" not in kontext
    )
    sdxl = fal.model_input(g("stable-diffusion-xl", 896, 1152, negative_prompt="n"), m["stable-diffusion-xl"])
    assert sdxl["negative_prompt"] == "n" and sdxl["image_size"] == {"width": 896, "height": 1152}
    with pytest.raises(ProviderError):
        fal.model_input(g("flux-1.1-pro", negative_prompt="n"), m["flux-1.1-pro"])


def test_fal_submit_and_text_to_image_paths() -> None:
    assert fal.MODELS["flux-dev"].submit_path(False) == "/fal-ai/flux/dev"
    assert fal.MODELS["flux-kontext-pro"].submit_path(True) == "/fal-ai/flux-pro/kontext"
    assert fal.MODELS["flux-kontext-pro"].submit_path(False) == "/fal-ai/flux-pro/kontext/text-to-image"


def test_fal_results() -> None:
    ok = {"images": [{"url": "https://f/a.png"}, {"url": "https://f/b.png"}], "has_nsfw_concepts": [False, False]}
    assert fal.image_urls(ok, 2) == ["https://f/a.png", "https://f/b.png"]
    flagged = {"images": [{"url": "https://f/a.png"}], "has_nsfw_concepts": [True]}
    with pytest.raises(ProviderError) as exc:
        fal.image_urls(flagged, 1)
    assert exc.value.code is ErrorCode.CONTENT_POLICY_VIOLATION and not exc.value.retryable
    with pytest.raises(ProviderError) as exc:
        fal.image_urls({"images": []}, 1)
    assert exc.value.code is ErrorCode.PROVIDER_ERROR
