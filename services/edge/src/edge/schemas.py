"""Request bodies of the REST routes, and their translation to GenerationParams."""

from __future__ import annotations

import json
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, model_validator

from edge.inputs import Input, read_image_url
from pixelmesh.common.v1 import generation_pb2 as gen
from svckit import formats
from svckit.errors import invalid

ImageFormat = Literal["png", "webp", "jpeg"]
# What a provider option may hold: JSON scalars, checked by routing against the model's
# allow-list (catalog `provider_options`). The OpenAI SDKs send them with
# extra_body={"provider_options": {...}}.
ProviderOptions = dict[str, StrictBool | int | float | str]
MAX_PROVIDER_OPTIONS = 32
# OpenAI's bound on one ImageRefParam's image_url (a data URL of a large image included).
MAX_IMAGE_URL_CHARS = 20_971_520


class GenerationBody(BaseModel):
    """Fields shared by the OpenAI route and the aggregators' /api/v2/generate."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str
    model: str | None = None
    n: int | None = Field(default=None, ge=1)
    size: str | None = None
    quality: str | None = None
    style: str | None = None
    background: str | None = None
    moderation: str | None = None
    output_format: ImageFormat | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    user: str | None = None
    # Aggregator extensions (the v2 API).
    negative_prompt: str | None = None
    seed: int | None = None
    format: ImageFormat | None = None
    image_url: str | None = None
    provider_options: ProviderOptions | None = Field(default=None, max_length=MAX_PROVIDER_OPTIONS)

    def to_params(self, default_format: str) -> gen.GenerationParams:
        if self.format and self.output_format and self.format != self.output_format:
            raise invalid("'format' and 'output_format' disagree; send one of them.", "format")
        fmt = self.output_format or self.format or default_format
        params = gen.GenerationParams(
            model=self.model or "",
            prompt=self.prompt,
            negative_prompt=self.negative_prompt or "",
            n=self.n if self.n is not None else 1,
            size=self.size or "",
            quality=self.quality or "",
            style=self.style or "",
            output_format=formats.BY_NAME[fmt].enum,
            background=self.background or "",
            moderation=self.moderation or "",
            image_url=self.image_url or "",
            user=self.user or "",
        )
        if self.output_compression is not None:
            params.output_compression = self.output_compression
        if self.seed is not None:
            params.seed = self.seed
        with_options(params, self.provider_options)
        return params


def with_options(params: gen.GenerationParams, options: ProviderOptions | None) -> None:
    if options is not None:
        params.provider_options.update(options)


class OpenAIImageBody(GenerationBody):
    """POST /v1/images/generations."""

    response_format: Literal["url", "b64_json"] | None = None
    stream: bool | None = None
    partial_images: int | None = Field(default=None, ge=0, le=3)
    # The newer SDKs' name for `user` (the end user, for abuse monitoring).
    safety_identifier: str | None = None

    def to_params(self, default_format: str) -> gen.GenerationParams:
        params = super().to_params(default_format)
        openai_extras(params, self)
        return params


def openai_extras(params: gen.GenerationParams, body: OpenAIImageBody | ImageForm) -> None:
    """The OpenAI-only fields: response_format, stream, partial_images, safety_identifier."""
    if body.user and body.safety_identifier and body.user != body.safety_identifier:
        raise invalid("'user' and 'safety_identifier' disagree; send one of them.", "safety_identifier")
    params.user = body.safety_identifier or body.user or ""
    params.response_format = body.response_format or ""
    params.stream = bool(body.stream)
    params.partial_images = body.partial_images or 0


class _EditFields(BaseModel):
    """The fields an edit takes in both of its bodies (multipart and JSON)."""

    prompt: str | None = None
    model: str | None = None
    n: int | None = Field(default=None, ge=1)
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    moderation: str | None = None
    input_fidelity: str | None = None
    output_format: ImageFormat | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    stream: bool | None = None
    partial_images: int | None = Field(default=None, ge=0, le=3)
    provider_options: ProviderOptions | None = Field(default=None, max_length=MAX_PROVIDER_OPTIONS)


class ImageForm(_EditFields):
    """Multipart fields of POST /v1/images/edits and /v1/images/variations (files apart).

    Lax (not strict): multipart sends every value as text, so "2" is n=2 and "true" a bool.
    Provider options come as `provider_options[name]` fields (what the OpenAI SDKs make of
    extra_body on a multipart call) or as one `provider_options` field holding a JSON object;
    their values stay text here and routing reads them by the option's type.
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _gather_options(cls, fields: Any) -> Any:
        if not isinstance(fields, dict):
            return fields
        fields = dict(fields)
        options: dict[str, Any] = {}
        raw = fields.pop("provider_options", None)
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raw = None
            if not isinstance(raw, dict):
                raise invalid("provider_options must be a JSON object.", "provider_options")
        if isinstance(raw, dict):
            options.update(raw)
        for name in [k for k in fields if k.startswith("provider_options[") and k.endswith("]")]:
            options[name[len("provider_options[") : -1]] = fields.pop(name)
        if options:
            fields["provider_options"] = options
        return fields

    response_format: Literal["url", "b64_json"] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    # Aggregator extensions, as on the generations route.
    negative_prompt: str | None = None
    seed: int | None = None

    def to_params(self, kind: gen.GenerationKind.ValueType) -> gen.GenerationParams:
        params = gen.GenerationParams(
            model=self.model or "",
            prompt=self.prompt or "",
            negative_prompt=self.negative_prompt or "",
            n=self.n or 1,
            size=self.size or "",
            quality=self.quality or "",
            output_format=formats.BY_NAME[self.output_format or "png"].enum,
            background=self.background or "",
            moderation=self.moderation or "",
            input_fidelity=self.input_fidelity or "",
            kind=kind,
        )
        openai_extras(params, self)
        if self.output_compression is not None:
            params.output_compression = self.output_compression
        if self.seed is not None:
            params.seed = self.seed
        with_options(params, self.provider_options)
        return params


class ImageRefBody(BaseModel):
    """OpenAI's ImageRefParam: exactly one of `image_url` (http(s) or a base64 data URL) and `file_id`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    image_url: str | None = Field(default=None, max_length=MAX_IMAGE_URL_CHARS)
    file_id: str | None = None

    def to_input(self, param: str, role: str) -> Input:
        if (self.image_url is None) == (self.file_id is None):
            raise invalid(f"{param} must hold exactly one of 'image_url' and 'file_id'.", param)
        if self.file_id is not None:
            raise invalid(
                "This gateway has no Files API, so file_id cannot name an image; send image_url "
                "(an http(s) URL or a data:image/...;base64 URL).",
                f"{param}.file_id",
            )
        return read_image_url(self.image_url or "", param=f"{param}.image_url", role=role)


class ImageEditJsonBody(_EditFields):
    """POST /v1/images/edits as JSON (OpenAI's EditImageBodyJsonParam): `images` (1-16
    ImageRefParams) and an optional `mask` instead of file parts; the other fields as multipart."""

    model_config = ConfigDict(extra="forbid", strict=True)

    images: list[ImageRefBody] | None = Field(default=None, max_length=16)
    mask: ImageRefBody | None = None
    user: str | None = None
    safety_identifier: str | None = None
    # The gateway's extensions, as on the multipart route.
    response_format: Literal["url", "b64_json"] | None = None
    negative_prompt: str | None = None
    seed: int | None = None

    def to_params(self) -> tuple[gen.GenerationParams, list[Input]]:
        """The params of the edit and its inputs in order (the images, then the mask)."""
        if not self.images:
            raise invalid(
                "Missing required parameter: 'images'. A JSON edit names its images as "
                '"images": [{"image_url": "..."}]; or send multipart/form-data with the image file(s).',
                "images",
            )
        inputs = [ref.to_input(f"images[{i}]", "image") for i, ref in enumerate(self.images)]
        if self.mask is not None:
            inputs.append(self.mask.to_input("mask", "mask"))
        fields = self.model_dump(exclude={"images", "mask"}, exclude_none=True)
        return ImageForm(**fields).to_params(gen.GENERATION_KIND_EDIT), inputs


class VariationForm(BaseModel):
    """Multipart fields of POST /v1/images/variations (OpenAI's, plus seed and output_format)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    n: int | None = Field(default=None, ge=1)
    size: str | None = None
    response_format: Literal["url", "b64_json"] | None = None
    user: str | None = None
    seed: int | None = None
    output_format: ImageFormat | None = None

    def to_params(self) -> gen.GenerationParams:
        form = ImageForm(**self.model_dump(exclude_none=True))
        return form.to_params(gen.GENERATION_KIND_VARIATION)


class PriceBody(BaseModel):
    """POST /api/v2/price: the fields of a generation request that decide its price."""

    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = None
    prompt: str | None = None
    n: int | None = Field(default=None, ge=1)
    size: str | None = None
    quality: str | None = None

    def to_params(self) -> gen.GenerationParams:
        return gen.GenerationParams(
            model=self.model or "",
            prompt=self.prompt or "price",
            n=self.n or 1,
            size=self.size or "",
            quality=self.quality or "",
        )


class GenerateBody(GenerationBody):
    """POST /api/v2/generate (the v2 API), plus `callback_url` for a signed webhook."""

    callback_url: str | None = None

    def to_params(self, default_format: str) -> gen.GenerationParams:
        params = super().to_params(default_format)
        if self.callback_url is not None:
            params.callback_url = checked_callback_url(self.callback_url, "callback_url")
        return params


MAX_URL_CHARS = 2048


def checked_callback_url(url: str, param: str) -> str:
    """A webhook target: an absolute http(s) URL with a host (400 naming `param` otherwise)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok or len(url) > MAX_URL_CHARS or any(c.isspace() for c in url):
        raise invalid(
            f"{param} must be an absolute http:// or https:// URL (at most {MAX_URL_CHARS} characters).", param
        )
    return url


B = TypeVar("B", bound=BaseModel)


def parse_body(model: type[B], raw: object) -> B:
    """Validate a decoded JSON body (or form fields); the first problem becomes a 400 naming the field."""
    if not isinstance(raw, dict):
        raise invalid("The request body must be a JSON object.")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        if first["type"] == "missing":
            msg = f"Missing required parameter: '{param}'."
        elif first["type"] == "extra_forbidden":
            msg = f"Unrecognized request argument supplied: {param}"
        else:
            msg = f"Invalid value for '{param}': {first['msg']}."
        raise invalid(msg, param) from None
