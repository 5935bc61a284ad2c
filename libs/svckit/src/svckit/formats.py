"""Image output formats: the one mapping between the proto enum, API names, file
extensions and MIME types, shared by edge (request names), routing (validation),
workers (encoding) and storage (object keys, content types)."""

from __future__ import annotations

from dataclasses import dataclass

from pixelmesh.common.v1 import generation_pb2 as gen


@dataclass(frozen=True)
class ImageFormat:
    enum: gen.OutputFormat.ValueType
    name: str  # as in the APIs: png | webp | jpeg
    extension: str  # in object keys
    mime_type: str


FORMATS = (
    ImageFormat(gen.OUTPUT_FORMAT_PNG, "png", "png", "image/png"),
    ImageFormat(gen.OUTPUT_FORMAT_WEBP, "webp", "webp", "image/webp"),
    ImageFormat(gen.OUTPUT_FORMAT_JPEG, "jpeg", "jpg", "image/jpeg"),
)
BY_NAME = {f.name: f for f in FORMATS}
BY_ENUM = {f.enum: f for f in FORMATS}
BY_EXTENSION = {f.extension: f for f in FORMATS}
DEFAULT = BY_ENUM[gen.OUTPUT_FORMAT_PNG]


def of(enum: gen.OutputFormat.ValueType) -> ImageFormat:
    """The format of an enum value; UNSPECIFIED means the default, png."""
    return BY_ENUM.get(enum, DEFAULT)
