"""The OpenAI adapter's pure mapping: which fields go to which model, refusals, usage, SSE."""

from __future__ import annotations

import functools

import httpx
import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from services.worker.tests.support import generation
from svckit.errors import ErrorCode
from worker.providers import ProviderError
from worker.providers.openai import Family, family_of, fields_for, refusal, size_of, usage_of
from worker.providers.sse import events

GENERATE, EDIT, VARIATION = gen.GENERATION_KIND_GENERATE, gen.GENERATION_KIND_EDIT, gen.GENERATION_KIND_VARIATION
g = functools.partial(generation, size="1024x1024")


def fields(model: str, kind: int = GENERATE, rf: str = "b64_json", **params) -> dict:
    return fields_for(g(model, **params), family_of(model), model, kind=kind, response_format=rf)


def test_families() -> None:
    assert family_of("dall-e-2") is Family.DALLE2 and family_of("dall-e-3") is Family.DALLE3
    assert {
        family_of(m) for m in ("gpt-image-1", "gpt-image-1-mini", "gpt-image-2-2026-04-21", "chatgpt-image-latest")
    } == {Family.GPT}
    with pytest.raises(ProviderError) as exc:
        family_of("flux-dev")
    assert exc.value.code is ErrorCode.INVALID_REQUEST


def test_dall_e_fields_never_carry_gpt_only_ones() -> None:
    sent = fields(
        "dall-e-3",
        style="vivid",
        background="opaque",
        moderation="low",
        output_compression=50,
        fmt=gen.OUTPUT_FORMAT_WEBP,
        stream=True,
        partial_images=2,
        quality="hd",
    )
    assert sent == {
        "model": "dall-e-3",
        "prompt": "p",
        "n": 1,
        "size": "1024x1024",
        "quality": "hd",
        "style": "vivid",
        "response_format": "b64_json",
    }
    assert "style" not in fields("dall-e-2", style="vivid")


def test_gpt_fields_never_carry_response_format_or_style() -> None:
    sent = fields(
        "gpt-image-1",
        style="vivid",
        fmt=gen.OUTPUT_FORMAT_JPEG,
        output_compression=70,
        background="opaque",
        moderation="low",
        stream=True,
        partial_images=5,
    )
    assert "response_format" not in sent and "style" not in sent
    assert sent["output_format"] == "jpeg" and sent["output_compression"] == 70
    assert sent["stream"] is True and sent["partial_images"] == 3  # clamped to the upstream's 0..3


def test_compression_only_for_lossy_formats_and_moderation_only_on_generations() -> None:
    assert "output_compression" not in fields("gpt-image-1", output_compression=70)  # png
    assert "moderation" not in fields("gpt-image-1", EDIT, moderation="low")
    variation = fields("dall-e-2", VARIATION, rf="url", quality="standard")
    assert variation == {"model": "dall-e-2", "n": 1, "size": "1024x1024", "response_format": "url"}


def test_sizes() -> None:
    assert size_of(g("gpt-image-1", size="auto")) == "auto"
    assert size_of(g("gpt-image-2", size="1280x720")) == "1280x720"
    ratio = g("gpt-image-1", size="2:3")
    ratio.width, ratio.height = 1024, 1536
    assert size_of(ratio) == "1024x1536"


def test_transparent_is_not_sent_to_gpt_image_2() -> None:
    with pytest.raises(ProviderError) as exc:
        fields("gpt-image-2", background="transparent")
    assert exc.value.code is ErrorCode.INVALID_REQUEST
    assert fields("gpt-image-1.5", background="transparent")["background"] == "transparent"


@pytest.mark.parametrize(
    "body",
    [
        {
            "error": {
                "code": "content_policy_violation",
                "message": "rejected",
                "type": "invalid_request_error",
                "param": None,
            }
        },
        {
            "error": {
                "code": "moderation_blocked",
                "message": "rejected",
                "type": "image_generation_user_error",
                "param": "",
            }
        },
        {"error": {"message": None, "type": "image_generation_user_error", "param": None, "code": None}},
        {"message": None, "type": "image_generation_user_error", "param": None, "code": None},
    ],
)
def test_every_refusal_shape(body: dict) -> None:
    err = refusal(body)
    assert err is not None and err.code is ErrorCode.CONTENT_POLICY_VIOLATION and not err.retryable


def test_other_errors_are_not_refusals() -> None:
    assert refusal({"error": {"code": "invalid_size", "message": "bad", "type": "invalid_request_error"}}) is None
    assert refusal("text") is None and refusal(None) is None


def test_usage() -> None:
    u = usage_of(
        {
            "usage": {
                "input_tokens": 50,
                "input_tokens_details": {"text_tokens": 40, "image_tokens": 10},
                "output_tokens": 1056,
                "total_tokens": 1106,
            }
        }
    )
    assert (u.input_tokens, u.input_text_tokens, u.input_image_tokens, u.output_tokens, u.total_tokens) == (
        50,
        40,
        10,
        1056,
        1106,
    )
    assert usage_of({"data": []}) is None


async def test_sse_framing() -> None:
    body = (
        b': keep-alive\n\nevent: image_generation.partial_image\ndata: {"a":\ndata: 1}\n\n'
        b'event: image_generation.completed\ndata: {"b": 2}\n\ndata: {"c": 3}'
    )
    response = httpx.Response(200, content=body)
    got = [(e.event, e.json()) async for e in events(response, "openai")]
    assert got == [
        ("image_generation.partial_image", {"a": 1}),
        ("image_generation.completed", {"b": 2}),
        ("message", {"c": 3}),
    ]
