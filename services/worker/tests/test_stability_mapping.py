"""The Stability adapter's pure mapping: aspect ratios, form fields, both response shapes."""

from __future__ import annotations

import base64
import functools

import httpx
import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from services.worker.tests.support import generation
from svckit.errors import ErrorCode
from worker.providers import ProviderError
from worker.providers.stability import MAX_SEED, MODELS, aspect_ratio, check_finish, form_fields, refusal, result_of

g = functools.partial(generation, model="sd-3.5-large", prompt="a cat", size="1024x1024", seed=5)


@pytest.mark.parametrize(
    ("size", "w", "h", "ratio"),
    [
        ("1024x1024", 1024, 1024, "1:1"),
        ("768x1344", 768, 1344, "9:16"),
        ("1344x768", 1344, 768, "16:9"),
        ("1024x768", 1024, 768, "5:4"),
        ("1536x1024", 1536, 1024, "3:2"),
        ("2:3", 832, 1216, "2:3"),
        ("21:9", 1536, 640, "21:9"),
        ("1024x3072", 1024, 3072, "9:21"),
    ],
)
def test_nearest_aspect_ratio(size, w, h, ratio) -> None:
    assert aspect_ratio(g(size=size, width=w, height=h)) == ratio


def test_fields_per_route() -> None:
    sd3 = form_fields(g(fmt=gen.OUTPUT_FORMAT_WEBP), MODELS["sd-3.5-large"], index=2, with_image=False, strength=0.5)
    assert sd3 == {
        "prompt": "a cat",
        "model": "sd3.5-large",
        "aspect_ratio": "1:1",
        "seed": "7",
        "output_format": "png",
    }
    core = form_fields(
        g(fmt=gen.OUTPUT_FORMAT_WEBP, style="anime"),
        MODELS["stable-image-core"],
        index=0,
        with_image=False,
        strength=0.5,
    )
    assert core["output_format"] == "webp" and core["style_preset"] == "anime" and "model" not in core
    ultra = form_fields(g(), MODELS["stable-image-ultra"], index=0, with_image=True, strength=0.25)
    assert ultra["strength"] == "0.25" and "aspect_ratio" not in ultra and "mode" not in ultra


def test_seeds_fold_into_the_upstream_range() -> None:
    fields = form_fields(g(seed=MAX_SEED), MODELS["sd-3.5-medium"], index=1, with_image=False, strength=0.5)
    assert fields["seed"] == "0"


def test_unknown_style_and_turbo_negative_prompt_are_refused() -> None:
    with pytest.raises(ProviderError):
        form_fields(g(style="watercolour"), MODELS["stable-image-core"], index=0, with_image=False, strength=0.5)
    with pytest.raises(ProviderError):
        form_fields(g(negative_prompt="x"), MODELS["sd-3.5-large-turbo"], index=0, with_image=False, strength=0.5)


def test_both_response_shapes() -> None:
    raw = httpx.Response(
        200, content=b"PNGDATA", headers={"content-type": "image/png", "finish-reason": "SUCCESS", "seed": "9"}
    )
    assert result_of(raw) == (b"PNGDATA", "SUCCESS", "9")
    body = {"image": base64.b64encode(b"PNGDATA").decode(), "finish_reason": "CONTENT_FILTERED", "seed": 9}
    js = httpx.Response(200, json=body, headers={"content-type": "application/json; type=image/png"})
    assert result_of(js) == (b"PNGDATA", "CONTENT_FILTERED", "9")


def test_finish_reasons() -> None:
    check_finish("SUCCESS")
    with pytest.raises(ProviderError) as exc:
        check_finish("CONTENT_FILTERED")
    assert exc.value.code is ErrorCode.CONTENT_POLICY_VIOLATION and not exc.value.retryable
    with pytest.raises(ProviderError) as exc:
        check_finish("ERROR")
    assert exc.value.code is ErrorCode.PROVIDER_ERROR


def test_only_content_moderation_403s_are_refusals() -> None:
    assert (
        refusal(httpx.Response(403, json={"id": "1", "name": "content_moderation", "errors": ["flagged"]})).code
        is ErrorCode.CONTENT_POLICY_VIOLATION
    )
    assert refusal(httpx.Response(403, json={"id": "1", "name": "forbidden", "errors": ["no access"]})) is None
    assert refusal(httpx.Response(400, json={"id": "1", "name": "content_moderation"})) is None
