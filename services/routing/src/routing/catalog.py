"""The model catalog: loaded from catalog.yaml (and the operator's own catalog files),
validated, looked up by id or alias."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.routing.v1 import routing_service_pb2 as pb
from svckit.config_files import read_mapping, reason
from svckit.errors import ErrorCode, GatewayError

DEFAULT_CATALOG = Path(__file__).with_name("catalog.yaml")
PIXEL_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
ASPECT_RATIO = re.compile(r"^(\d{1,2}):(\d{1,2})$")
# Pixel size an aspect ratio renders at (about one megapixel, sides divisible by 64).
ASPECT_PIXELS = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "4:3": (1024, 768),
    "3:4": (768, 1024),
    "21:9": (1344, 576),
}
# The longest POST /api/v2/generate waits for a result (Replicate's `Prefer: wait` bound too).
MAX_SYNC_WAIT_SECONDS = 60
KNOWN_PARAMETERS = {
    "negative_prompt",
    "seed",
    "style",
    "background",
    "moderation",
    "output_compression",
    "image_url",
    "input_fidelity",
    "image_fidelity",
    "human_fidelity",
}
IMAGE_FORMATS = {"png", "webp", "jpeg"}


class CustomSize(BaseModel):
    """Free WIDTHxHEIGHT sizes (gpt-image-2, Flux, SD3: "custom" in the perf API)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    min_side: int = Field(ge=16)
    max_side: int = Field(le=8192)
    multiple_of: int = Field(default=1, ge=1)
    max_aspect: float = Field(default=0.0, ge=0)  # 0: any
    max_pixels: int = Field(default=0, ge=0)  # 0: max_side squared

    def problem(self, width: int, height: int) -> str | None:
        """Why WIDTHxHEIGHT breaks the rule, or None."""
        if not (self.min_side <= width <= self.max_side and self.min_side <= height <= self.max_side):
            return f"both sides must be between {self.min_side} and {self.max_side} pixels"
        if width % self.multiple_of or height % self.multiple_of:
            return f"both sides must be multiples of {self.multiple_of}"
        if self.max_aspect and max(width, height) > self.max_aspect * min(width, height):
            return f"the aspect ratio must be within 1:{self.max_aspect:g} and {self.max_aspect:g}:1"
        if self.max_pixels and width * height > self.max_pixels:
            return f"at most {self.max_pixels:,} pixels in total"
        return None

    def to_proto(self) -> pb.CustomSizeRule:
        return pb.CustomSizeRule(
            min_side=self.min_side,
            max_side=self.max_side,
            multiple_of=self.multiple_of,
            max_aspect=self.max_aspect,
            max_pixels=self.max_pixels,
        )


class ImageInputs(BaseModel):
    """What POST /v1/images/edits or /variations takes for a model (provider contracts §1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    sizes: list[str] = Field(min_length=1)
    default_size: str
    max_images: int = Field(default=1, ge=1, le=16)
    formats: list[str] = ["png"]
    max_bytes: int = Field(default=4 * 1024 * 1024, ge=1)
    square: bool = False
    mask: bool = False
    prompt: bool = True
    # The model's `custom_size` rule holds on this route too (gpt-image-2 edits take free sizes).
    custom_size: bool = False
    # Roles an input image may have besides "image" (Kling's references: subject, face).
    references: list[str] = []
    # Named inputs, one of each and nothing else (Kolors virtual try-on: person, garment).
    roles: list[str] = []
    # Routes taking fewer input images than max_images (FLUX Kontext: BFL 4, Replicate and
    # fal 1): a request with more goes only to the other routes.
    route_max_images: dict[str, int] = {}

    @model_validator(mode="after")
    def _check(self) -> ImageInputs:
        if self.default_size not in self.sizes:
            raise ValueError(f"default_size {self.default_size!r} not in sizes")
        if any(not 1 <= n < self.max_images for n in self.route_max_images.values()):
            raise ValueError("route_max_images are each at least 1 and below max_images")
        if {"image", "mask"} & set(self.references + self.roles):
            raise ValueError("references and roles name roles other than image and mask")
        if set(self.formats) - IMAGE_FORMATS:
            raise ValueError(f"unknown formats {self.formats}")
        return self

    def to_proto(self) -> pb.ImageInputRule:
        return pb.ImageInputRule(
            sizes=self.sizes,
            default_size=self.default_size,
            max_images=self.max_images,
            formats=self.formats,
            max_bytes=self.max_bytes,
            square=self.square,
            mask=self.mask,
            prompt=self.prompt,
        )


# A provider option may not shadow a field the gateway models (send `seed`, not an option).
MODELED_FIELDS = frozenset(f.name for f in gen.GenerationParams.DESCRIPTOR.fields) | {"width", "height"}
OptionValue = bool | int | float | str


class ProviderOption(BaseModel):
    """One upstream field a client may pass in `provider_options`: its type and bounds,
    and the routes whose upstream takes it (none listed: every route of the model)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["boolean", "integer", "number", "string"]
    minimum: float | None = None
    maximum: float | None = None
    values: list[str] = []  # a string option's accepted values (empty: any string)
    max_length: int = Field(default=256, ge=1)
    providers: list[str] = []
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> ProviderOption:
        if self.values and self.type != "string":
            raise ValueError("only a string option lists values")
        if (self.minimum is not None or self.maximum is not None) and self.type not in ("integer", "number"):
            raise ValueError("only a number option has a minimum or maximum")
        return self

    def coerce(self, value: OptionValue) -> OptionValue:
        """The value as the upstream takes it, or ValueError saying why not. Form fields
        (multipart edits) carry only text, so "28" is an integer and "true" a boolean."""
        if self.type == "boolean":
            if isinstance(value, str) and value in ("true", "false"):
                return value == "true"
            if not isinstance(value, bool):
                raise ValueError("must be true or false")
            return value
        if self.type == "string":
            if not isinstance(value, str):
                raise ValueError("must be a string")
            if self.values and value not in self.values:
                raise ValueError(f"must be one of {', '.join(self.values)}")
            if len(value) > self.max_length:
                raise ValueError(f"must be at most {self.max_length} characters")
            return value
        number = _number(value)
        if number is None or (self.type == "integer" and not float(number).is_integer()):
            raise ValueError("must be an integer" if self.type == "integer" else "must be a number")
        if self.type == "integer":
            number = int(number)
        low = self.minimum if self.minimum is not None else -math.inf
        high = self.maximum if self.maximum is not None else math.inf
        if not low <= number <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return number

    def to_proto(self, name: str) -> pb.ProviderOptionRule:
        rule = pb.ProviderOptionRule(
            name=name, type=self.type, values=self.values, providers=self.providers, description=self.description
        )
        if self.minimum is not None:
            rule.minimum = self.minimum
        if self.maximum is not None:
            rule.maximum = self.maximum
        return rule


def _number(value: OptionValue) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value if math.isfinite(value) else None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def parse_pixels(size: str) -> tuple[int, int] | None:
    m = PIXEL_SIZE.match(size)
    return (int(m.group(1)), int(m.group(2))) if m else None


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    aliases: list[str] = []
    display_name: str = ""
    owned_by: str
    # Routes in fallback order; `route_weights` (optional) shares first attempts among
    # them (weight 0: fallback only). Without weights the first route takes them all.
    providers: list[str] = Field(min_length=1)
    route_weights: dict[str, float] = {}
    sizes: list[str] = Field(min_length=1)
    default_size: str
    custom_size: CustomSize | None = None
    max_images: int = Field(ge=1, le=10)
    max_prompt_chars: int = Field(ge=1)
    qualities: list[str]
    default_quality: str = ""
    output_formats: list[str]
    backgrounds: list[str]
    styles: list[str]
    moderations: list[str] = []
    parameters: list[str]
    # The first one is the default (DALL-E: url; GPT image models: b64_json, as upstream).
    response_formats: list[str] = ["url", "b64_json"]
    max_partial_images: int = Field(default=0, ge=0, le=3)
    edits: ImageInputs | None = None
    variations: ImageInputs | None = None
    token_usage: bool = False
    # Upstream fields passed through as they are (provider_options), by name.
    provider_options: dict[str, ProviderOption] = {}
    # False: the model makes images only from its inputs (`edits`), never from a prompt alone.
    text_to_image: bool = True
    # Input images a generation from a prompt may carry as image prompts, sent with the prompt
    # (Midjourney's imagine `base64Array`); 0: a generation takes none.
    image_prompts: int = Field(default=0, ge=0, le=5)
    eta_seconds: int = Field(ge=0)
    # How long POST /api/v2/generate waits for the result by default (Generation.sync_wait_seconds);
    # None: twice the ETA, at most MAX_SYNC_WAIT_SECONDS. 0 answers pending at once (Midjourney,
    # as the v2 API's docs say).
    sync_wait_seconds: int | None = Field(default=None, ge=0, le=MAX_SYNC_WAIT_SECONDS)
    created: int = 1767225600  # 2026-01-01, when the catalog entry was added

    @model_validator(mode="after")
    def _check(self) -> ModelEntry:
        if set(self.route_weights) - set(self.providers) or any(w < 0 for w in self.route_weights.values()):
            raise ValueError(f"{self.id}: route_weights must name its providers, with weights >= 0")
        for size in self.sizes + [s for spec in (self.edits, self.variations) if spec for s in spec.sizes]:
            if size != "auto" and not PIXEL_SIZE.match(size) and size not in ASPECT_PIXELS:
                raise ValueError(f"{self.id}: bad size {size!r}")
        if self.default_size not in self.sizes:
            raise ValueError(f"{self.id}: default_size {self.default_size!r} not in sizes")
        if any(spec and spec.custom_size for spec in (self.edits, self.variations)) and not self.custom_size:
            raise ValueError(f"{self.id}: an input route takes custom sizes but the model has no custom_size rule")
        if self.default_quality and self.default_quality not in self.qualities:
            raise ValueError(f"{self.id}: default_quality {self.default_quality!r} not in qualities")
        unknown = set(self.parameters) - KNOWN_PARAMETERS
        if unknown:
            raise ValueError(f"{self.id}: unknown parameters {sorted(unknown)}")
        if not self.response_formats or set(self.response_formats) - {"url", "b64_json"}:
            raise ValueError(f"{self.id}: response_formats must be url and/or b64_json")
        if set(self.output_formats) - IMAGE_FORMATS:
            raise ValueError(f"{self.id}: unknown output formats {self.output_formats}")
        if not self.text_to_image and self.edits is None:
            raise ValueError(f"{self.id}: a model without text_to_image needs `edits`")
        for spec in (self.edits, self.variations):
            if spec and set(spec.route_max_images) - set(self.providers):
                raise ValueError(f"{self.id}: route_max_images names providers the model has not")
        for name, option in self.provider_options.items():
            if name in MODELED_FIELDS:
                raise ValueError(f"{self.id}: provider option {name!r} is a request field of its own")
            if set(option.providers) - set(self.providers):
                raise ValueError(f"{self.id}: provider option {name!r} names providers the model has not")
        return self

    @property
    def default_sync_wait(self) -> int:
        if self.sync_wait_seconds is not None:
            return self.sync_wait_seconds
        return min(2 * self.eta_seconds, MAX_SYNC_WAIT_SECONDS)

    @property
    def quality_default(self) -> str:
        if self.default_quality:
            return self.default_quality
        return "auto" if "auto" in self.qualities else self.qualities[0]

    def pixels(self, size: str) -> tuple[int, int]:
        """Width and height of an accepted size ("auto" is the default size)."""
        if size == "auto":
            size = self.default_size if self.default_size != "auto" else "1024x1024"
        if size in ASPECT_PIXELS:
            return ASPECT_PIXELS[size]
        wh = parse_pixels(size)
        assert wh, size
        return wh

    def to_proto(self) -> pb.Model:
        model = pb.Model(
            id=self.id,
            aliases=self.aliases,
            display_name=self.display_name or self.id,
            owned_by=self.owned_by,
            providers=self.providers,
            sizes=self.sizes,
            default_size=self.default_size,
            max_images=self.max_images,
            max_prompt_chars=self.max_prompt_chars,
            qualities=self.qualities,
            default_quality=self.quality_default,
            styles=self.styles,
            output_formats=self.output_formats,
            backgrounds=self.backgrounds,
            moderations=self.moderations,
            parameters=self.parameters,
            response_formats=self.response_formats,
            max_partial_images=self.max_partial_images,
            token_usage=self.token_usage,
            eta_seconds=self.eta_seconds,
            created=self.created,
        )
        if self.custom_size:
            model.custom_size.CopyFrom(self.custom_size.to_proto())
        if self.edits:
            model.edits.CopyFrom(self.edits.to_proto())
        if self.variations:
            model.variations.CopyFrom(self.variations.to_proto())
        model.provider_options.extend(option.to_proto(name) for name, option in self.provider_options.items())
        return model


class Catalog:
    """Models whose providers are enabled on this gateway, by id and alias."""

    def __init__(self, entries: list[ModelEntry], enabled_providers: set[str], default_model: str) -> None:
        self._all = {e.id: e for e in entries}
        self.default_model = default_model
        self.enabled_providers = enabled_providers
        self._by_name: dict[str, ModelEntry] = {}
        for e in entries:
            for name in (e.id, *e.aliases):
                if name in self._by_name:
                    raise ValueError(f"model name {name!r} defined twice")
                self._by_name[name] = e
        if default_model not in self._all:
            raise ValueError(f"default_model {default_model!r} is not in the catalog")

    @classmethod
    def load(cls, enabled_providers: set[str], path: Path = DEFAULT_CATALOG, extra: tuple[Path, ...] = ()) -> Catalog:
        """The catalog file plus the operator's `extra` files (ROUTING_EXTRA_CATALOGS: models
        of their own, e.g. self-hosted ones); a bad entry raises CatalogError naming it."""
        raw = read_mapping(path, CatalogError)
        if not isinstance(raw.get("models"), list) or "default_model" not in raw:
            raise CatalogError(f"{path}: needs default_model and a models list")
        entries = _entries(path, raw)
        for extra_path in extra:
            extra_raw = read_mapping(extra_path, CatalogError)
            if set(extra_raw) - {"version", "defaults", "models"} or not isinstance(extra_raw.get("models"), list):
                raise CatalogError(f"{extra_path}: an extra catalog has `models` (a list) and optional `defaults`")
            # The bundled defaults apply under the file's own, so an entry need not repeat them.
            extra_raw["defaults"] = {**raw.get("defaults", {}), **(extra_raw.get("defaults") or {})}
            entries += _entries(extra_path, extra_raw)
        try:
            return cls(entries, enabled_providers, raw["default_model"])
        except ValueError as exc:
            raise CatalogError(f"{', '.join(map(str, (path, *extra)))}: {exc}") from exc

    @property
    def all(self) -> list[ModelEntry]:
        return list(self._all.values())

    def available(self) -> list[ModelEntry]:
        return [e for e in self._all.values() if self.routes(e)]

    def routes(self, entry: ModelEntry) -> list[str]:
        """The model's providers that are enabled here, in routing order."""
        return [p for p in entry.providers if p in self.enabled_providers]

    def get(self, name: str) -> ModelEntry:
        """The model by id or alias; an empty name means the catalog's default model."""
        entry = self._by_name.get(name or self.default_model)
        if entry is None or not self.routes(entry):
            raise GatewayError(
                ErrorCode.MODEL_NOT_FOUND,
                f"The model '{name}' does not exist or is not enabled on this gateway.",
                param="model",
            )
        return entry


class CatalogError(ValueError):
    """A catalog file that cannot be served: the message names the file and the entry."""


def _entries(path: Path, raw: dict) -> list[ModelEntry]:
    defaults = raw.get("defaults") or {}
    entries = []
    for index, model in enumerate(raw["models"]):
        name = model.get("id", "?") if isinstance(model, dict) else "?"
        try:
            if not isinstance(model, dict):
                raise CatalogError("is not a mapping")
            entries.append(ModelEntry.model_validate({**defaults, **model}))
        except (ValidationError, CatalogError) as exc:
            raise CatalogError(f"{path}: models[{index}] ({name!r}): {reason(exc)}") from exc
    return entries
