"""The google adapter's pure mapping: request body, answers without images, key errors."""

from __future__ import annotations

import base64

import httpx
import pytest

from services.worker.tests.support import generation
from svckit.errors import ErrorCode
from worker.providers import ProviderError
from worker.providers.google import classify, image_of, request_body, upstream_model, usage_of

PNG = base64.b64encode(b"\x89PNG fake").decode()


def test_request_body() -> None:
    body = request_body(
        generation("gemini-2.5-flash-image", 1536, 640, prompt="a fox", size="1536x640"), [("image/jpeg", b"jpegbytes")]
    )
    parts = body["contents"][0]["parts"]
    assert parts[0] == {"inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(b"jpegbytes").decode()}}
    assert parts[1] == {"text": "a fox"} and body["contents"][0]["role"] == "user"
    assert body["generationConfig"] == {"responseModalities": ["IMAGE"], "imageConfig": {"aspectRatio": "21:9"}}


def test_the_image_part_is_found_among_text_parts() -> None:
    answer = {
        "candidates": [
            {
                "content": {"parts": [{"text": "Here you go"}, {"inlineData": {"mimeType": "image/png", "data": PNG}}]},
                "finishReason": "STOP",
            }
        ]
    }
    assert image_of(answer) == (b"\x89PNG fake", "Here you go")


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ({"promptFeedback": {"blockReason": "SAFETY"}}, ErrorCode.CONTENT_POLICY_VIOLATION),
        ({"promptFeedback": {"blockReason": "OTHER"}, "candidates": []}, ErrorCode.CONTENT_POLICY_VIOLATION),
        (
            {"candidates": [{"content": {"parts": []}, "finishReason": "IMAGE_PROHIBITED_CONTENT"}]},
            ErrorCode.CONTENT_POLICY_VIOLATION,
        ),
        ({"candidates": [{"finishReason": "SAFETY"}]}, ErrorCode.CONTENT_POLICY_VIOLATION),
        # §14: a 200 without inlineData is a content-policy failure, whatever the finish reason
        (
            {"candidates": [{"content": {"parts": [{"text": "no"}]}, "finishReason": "STOP"}]},
            ErrorCode.CONTENT_POLICY_VIOLATION,
        ),
        (
            {"candidates": [{"content": {"parts": []}, "finishReason": "IMAGE_OTHER"}]},
            ErrorCode.CONTENT_POLICY_VIOLATION,
        ),
        ({"candidates": [{"content": {"parts": []}, "finishReason": "NO_IMAGE"}]}, ErrorCode.CONTENT_POLICY_VIOLATION),
        ({"candidates": []}, ErrorCode.PROVIDER_ERROR),
        ({}, ErrorCode.PROVIDER_ERROR),
        (None, ErrorCode.PROVIDER_ERROR),
    ],
)
def test_answers_without_an_image(answer, code) -> None:
    with pytest.raises(ProviderError) as exc:
        image_of(answer)
    assert exc.value.code is code and not exc.value.retryable


def test_only_api_key_invalid_is_an_auth_error() -> None:
    bad_key = {
        "error": {
            "code": 400,
            "status": "INVALID_ARGUMENT",
            "message": "API key not valid.",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
        }
    }
    assert classify(httpx.Response(400, json=bad_key)).code is ErrorCode.PROVIDER_AUTH
    other = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "Unsupported aspect ratio"}}
    assert classify(httpx.Response(400, json=other)) is None
    assert classify(httpx.Response(500, text="oops")) is None


def test_usage_is_summed_over_calls() -> None:
    meta = {
        "usageMetadata": {
            "promptTokenCount": 270,
            "candidatesTokenCount": 1290,
            "totalTokenCount": 1560,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 12}, {"modality": "IMAGE", "tokenCount": 258}],
        }
    }
    u = usage_of([meta, meta])
    assert (u.input_tokens, u.input_text_tokens, u.input_image_tokens, u.output_tokens, u.total_tokens) == (
        540,
        24,
        516,
        2580,
        3120,
    )
    assert usage_of([{"candidates": []}]) is None


def test_models() -> None:
    for model in ("gemini-3.1-flash-image", "gemini-3-pro-image", "gemini-3.1-flash-lite-image"):
        assert upstream_model(model, {}) == model
    for preview, successor in (
        ("gemini-3-pro-image-preview", "gemini-3-pro-image"),
        ("gemini-3.1-flash-image-preview", "gemini-3.1-flash-image"),
    ):
        with pytest.raises(ProviderError) as exc:
            upstream_model(preview, {})
        assert exc.value.code is ErrorCode.INVALID_REQUEST and successor in exc.value.message
    assert upstream_model("nano-banana", {"nano-banana": "gemini-2.5-flash-image"}) == "gemini-2.5-flash-image"
    for model in ("imagen-4.0-generate-001", "gemini-2.5-pro"):
        with pytest.raises(ProviderError):
            upstream_model(model, {})
