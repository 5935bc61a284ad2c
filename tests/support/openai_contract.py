"""OpenAI's own contract, from the openai SDK's types: the fields of its schema have the
types and enum values it allows, and an optional field without a value is omitted, not null.
(This gateway's own fields, outside OpenAI's schema, are left to the tests that own them.)"""

from __future__ import annotations

from openai.types import Image, ImageEditCompletedEvent, ImageGenCompletedEvent, ImageGenPartialImageEvent
from openai.types import ImagesResponse
from pydantic import BaseModel

EVENTS: dict[str, type[BaseModel]] = {
    "image_generation.partial_image": ImageGenPartialImageEvent,
    "image_generation.completed": ImageGenCompletedEvent,
    "image_edit.completed": ImageEditCompletedEvent,
}


def assert_matches(body: dict, model: type[BaseModel]) -> None:
    fields = {k: v for k, v in body.items() if k in model.model_fields}
    assert not [k for k, v in fields.items() if v is None], f"null where OpenAI omits the field: {fields}"
    model.model_validate(fields, strict=True)


def assert_images_response(body: dict) -> None:
    """An ImagesResponse of a GPT-image-like request (no DALL·E quality in it)."""
    assert_matches(body, ImagesResponse)
    for item in body["data"]:
        assert_matches(item, Image)
        assert len([k for k in ("url", "b64_json") if k in item]) == 1, item


def assert_stream_event(event: dict) -> None:
    assert event["type"] in EVENTS or event["type"] == "image_edit.partial_image", event["type"]
    if event["type"] in EVENTS:
        assert_matches(event, EVENTS[event["type"]])
