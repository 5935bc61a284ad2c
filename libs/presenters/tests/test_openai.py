"""OpenAI's ImagesResponse and stream events, checked against the openai SDK's own types:
every field of OpenAI's schema has a type and a value its enums allow, and an optional
field without a value is omitted, never null."""

from __future__ import annotations

import pytest
from openai.types import Image as OpenAIImage
from openai.types import ImageEditCompletedEvent, ImageGenCompletedEvent, ImageGenPartialImageEvent, ImagesResponse
from pydantic import BaseModel

from pixelmesh.common.v1 import generation_pb2 as gen
from presenters.openai import images_response, stream_event


def succeeded(model: str = "gpt-image-1", quality: str = "auto", **params) -> gen.Generation:
    g = gen.Generation(
        id="gen_x",
        model=model,
        state=gen.GENERATION_STATE_SUCCEEDED,
        width=1024,
        height=1024,
        quality=quality,
        output_format=gen.OUTPUT_FORMAT_PNG,
        seed=7,
    )
    g.params.MergeFrom(gen.GenerationParams(model=model, prompt="p", **params))
    g.create_time.seconds = 1_700_000_000
    g.images.add(object_key="k/0.png")
    g.images.add(object_key="k/1.png")
    return g


def openai_fields(body: dict, model: type[BaseModel]) -> dict:
    """The part of a body OpenAI's schema describes (this gateway's own fields left out)."""
    return {k: v for k, v in body.items() if k in model.model_fields}


# DALL·E's qualities: the SDK's request type still lists them ("only supported by retired
# DALL·E models"), its response type no longer does.
DALL_E_QUALITIES = ("standard", "hd")


def assert_matches(body: dict, model: type[BaseModel]) -> None:
    fields = openai_fields(body, model)
    assert not [k for k, v in fields.items() if v is None], f"null instead of omitted: {fields}"
    if model is ImagesResponse and fields.get("quality") in DALL_E_QUALITIES:
        fields.pop("quality")
    model.model_validate(fields, strict=True)


@pytest.mark.parametrize(
    ("model", "quality", "expected"),
    [
        ("gpt-image-1", "auto", None),
        ("gpt-image-1", "high", "high"),
        ("dall-e-3", "hd", "hd"),
        ("dall-e-3", "auto", None),
        ("pixelmesh-sketch", "low", "low"),
    ],
)
def test_images_response_says_only_a_quality_that_was_used(model: str, quality: str, expected: str | None) -> None:
    body = images_response(succeeded(model, quality), ["aGk=", "aGk="], "b64_json", 12)
    assert_matches(body, ImagesResponse)
    assert body.get("quality") == expected
    assert body["perf"]["quality"] == quality  # the perf API's block reports the request's quality as it was


def test_images_response_data_omits_what_it_does_not_have() -> None:
    g = succeeded("dall-e-3", "standard")
    g.images[0].revised_prompt = "A fox, detailed"
    body = images_response(g, ["https://u/0", "https://u/1"], "url", 12)
    assert body["data"] == [{"url": "https://u/0", "revised_prompt": "A fox, detailed"}, {"url": "https://u/1"}]
    for item in body["data"]:
        assert_matches(item, OpenAIImage)
    assert_matches(body, ImagesResponse)
    assert "background" not in body and "usage" not in body and "safety_identifier" not in body


def test_images_response_background_usage_and_safety_identifier() -> None:
    g = succeeded(background="transparent", user="end-user-1")
    g.usage.MergeFrom(gen.Usage(input_tokens=10, output_tokens=20, input_text_tokens=10))
    body = images_response(g, ["aGk=", "aGk="], "b64_json", 12)
    assert_matches(body, ImagesResponse)
    assert (body["background"], body["safety_identifier"]) == ("transparent", "end-user-1")
    assert body["usage"]["total_tokens"] == 30 and body["data"] == [{"b64_json": "aGk="}, {"b64_json": "aGk="}]
    assert "background" not in images_response(succeeded(background="auto"), ["a", "b"], "b64_json", 1)


@pytest.mark.parametrize(
    ("kind", "completed"), [("image_generation", ImageGenCompletedEvent), ("image_edit", ImageEditCompletedEvent)]
)
def test_stream_events_match_the_sdk_types(kind: str, completed: type[BaseModel]) -> None:
    g = succeeded(user="end-user-1")
    partial = stream_event(kind, g, "aGk=", partial_index=0)
    if kind == "image_generation":
        assert_matches(partial, ImageGenPartialImageEvent)
    done = stream_event(kind, g, "aGk=")
    assert_matches(done, completed)
    assert done["safety_identifier"] == "end-user-1" and "safety_identifier" not in partial
