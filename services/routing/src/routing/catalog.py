"""The model catalog: loaded from catalog.yaml, validated, looked up by id or alias."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pixelmesh.routing.v1 import routing_service_pb2 as pb
from svckit.errors import ErrorCode, GatewayError

DEFAULT_CATALOG = Path(__file__).with_name("catalog.yaml")
PIXEL_SIZE = re.compile(r"^(\d{2,5})x(\d{2,5})$")
ASPECT_RATIO = re.compile(r"^(\d{1,2}):(\d{1,2})$")
# Pixel size an aspect ratio renders at (about one megapixel, sides divisible by 64).
ASPECT_PIXELS = {"1:1": (1024, 1024), "2:3": (832, 1248), "3:2": (1248, 832), "9:16": (768, 1344), "16:9": (1344, 768)}
KNOWN_PARAMETERS = {"negative_prompt", "seed", "style", "background", "moderation", "output_compression", "image_url"}


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    aliases: list[str] = []
    display_name: str = ""
    owned_by: str
    providers: list[str] = Field(min_length=1)
    sizes: list[str] = Field(min_length=1)
    default_size: str
    max_images: int = Field(ge=1, le=10)
    max_prompt_chars: int = Field(ge=1)
    qualities: list[str]
    output_formats: list[str]
    backgrounds: list[str]
    styles: list[str]
    parameters: list[str]
    eta_seconds: int = Field(ge=0)
    created: int = 1767225600  # 2026-01-01, when the catalog entry was added

    @model_validator(mode="after")
    def _check(self) -> ModelEntry:
        for size in self.sizes:
            if size != "auto" and not PIXEL_SIZE.match(size) and size not in ASPECT_PIXELS:
                raise ValueError(f"{self.id}: bad size {size!r}")
        if self.default_size not in self.sizes:
            raise ValueError(f"{self.id}: default_size {self.default_size!r} not in sizes")
        unknown = set(self.parameters) - KNOWN_PARAMETERS
        if unknown:
            raise ValueError(f"{self.id}: unknown parameters {sorted(unknown)}")
        return self

    def pixels(self, size: str) -> tuple[int, int]:
        """Width and height of an accepted size ("auto" is the default size)."""
        if size == "auto":
            size = self.default_size
        if size in ASPECT_PIXELS:
            return ASPECT_PIXELS[size]
        m = PIXEL_SIZE.match(size)
        assert m, size
        return int(m.group(1)), int(m.group(2))

    def to_proto(self) -> pb.Model:
        return pb.Model(
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
            styles=self.styles,
            output_formats=self.output_formats,
            backgrounds=self.backgrounds,
            parameters=self.parameters,
            eta_seconds=self.eta_seconds,
            created=self.created,
        )


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
    def load(cls, enabled_providers: set[str], path: Path = DEFAULT_CATALOG) -> Catalog:
        raw = yaml.safe_load(path.read_text())
        defaults = raw.get("defaults", {})
        entries = [ModelEntry.model_validate({**defaults, **m}) for m in raw["models"]]
        return cls(entries, enabled_providers, raw["default_model"])

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
