"""The price table (prices.yaml, plus the operator's own price files): quotes and the tariff a reservation keeps."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from pixelmesh.common.v1 import generation_pb2 as gen
from svckit.config_files import read_mapping, reason
from svckit.errors import ErrorCode, GatewayError

DEFAULT_PRICE_TABLE = Path(__file__).with_name("prices.yaml")


def usd_micros(usd: Decimal) -> int:
    return int((usd * 1_000_000).to_integral_value())


class PriceRow(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    quality: str = "*"
    size: str = "*"
    usd: Decimal = Field(ge=0)

    def matches(self, quality: str, size: str) -> bool:
        return self.quality in ("*", quality) and self.size in ("*", size)


class TokenRates(BaseModel):
    """USD per million tokens of a token-priced model, and the reservation's input allowance."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    input_text: Decimal = Field(ge=0)
    input_image: Decimal = Field(ge=0)
    output: Decimal = Field(gt=0)
    input_image_allowance_tokens: int = Field(ge=0)


MEGAPIXEL = 2**20


class MegapixelRates(BaseModel):
    """USD of a megapixel-priced model (FLUX.2 on BFL): an image costs `first` for its first
    megapixel, `additional` for each further one (pro rata), and `input` for each megapixel
    of every input image it was given. A megapixel is 2**20 pixels (1024x1024 is one, as
    BFL's 1 MP figures are). The input images' sizes are not known when the price is
    reserved, so each counts as `input_image_megapixels`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    first: Decimal = Field(gt=0)
    additional: Decimal = Field(ge=0)
    input: Decimal = Field(ge=0)
    input_image_megapixels: Decimal = Field(default=Decimal(1), ge=0)

    def per_image(self, size: str, input_images: int) -> Decimal | None:
        """One image's USD at a WIDTHxHEIGHT size (None for a size without pixels), rounded up
        to a whole micro-dollar."""
        width, _, height = size.partition("x")
        if not (width.isdigit() and height.isdigit()):
            return None
        megapixels = Decimal(int(width) * int(height)) / MEGAPIXEL
        usd = (
            self.first
            + max(Decimal(0), megapixels - 1) * self.additional
            + input_images * self.input_image_megapixels * self.input
        )
        return Decimal(math.ceil(usd * 1_000_000)) / 1_000_000


class ModelPrice(BaseModel):
    """Per-image rows (the first matching one wins), or megapixel rates, of one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    per_image: list[PriceRow] = []
    tokens: TokenRates | None = None
    megapixels: MegapixelRates | None = None

    @model_validator(mode="after")
    def _one_way(self) -> ModelPrice:
        if self.megapixels is None and not self.per_image:
            raise ValueError("a model needs per_image rows or megapixels rates")
        if self.megapixels is not None and (self.per_image or self.tokens):
            raise ValueError("a megapixel-priced model has no per_image rows or token rates")
        return self


class PriceTableFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int
    token_usd: Decimal = Field(gt=0)
    # A bare list of rows is a fixed-price model.
    models: dict[str, list[PriceRow] | ModelPrice]


_ENTRY: TypeAdapter[list[PriceRow] | ModelPrice] = TypeAdapter(list[PriceRow] | ModelPrice)


class PriceTableError(ValueError):
    """A price file that cannot be served: the message names the file and the entry."""


@dataclass(frozen=True)
class Quote:
    per_image_usd: Decimal
    total_usd: Decimal
    per_image_tokens: int
    total_tokens: int
    tariff: gen.Tariff

    @property
    def total(self) -> gen.Cost:
        return gen.Cost(tokens=self.total_tokens, usd_micros=usd_micros(self.total_usd))

    @property
    def per_image(self) -> gen.Cost:
        return gen.Cost(tokens=self.per_image_tokens, usd_micros=usd_micros(self.per_image_usd))

    @staticmethod
    def usd_micros(usd: Decimal) -> int:
        return usd_micros(usd)


class PriceTable:
    def __init__(self, table: PriceTableFile) -> None:
        self._table = table
        self._models = {
            name: (entry if isinstance(entry, ModelPrice) else ModelPrice(per_image=entry))
            for name, entry in table.models.items()
        }

    @classmethod
    def load(cls, path: Path = DEFAULT_PRICE_TABLE, extra: tuple[Path, ...] = ()) -> PriceTable:
        """The price table plus the operator's `extra` files (PRICING_EXTRA_PRICE_TABLES:
        `models:` only, priced in the table's token); a bad entry raises PriceTableError naming it."""
        raw = read_mapping(path, PriceTableError)
        try:
            table = PriceTableFile.model_validate(raw)
        except ValidationError as exc:
            raise PriceTableError(f"{path}: {reason(exc)}") from exc
        for extra_path in extra:
            extra_raw = read_mapping(extra_path, PriceTableError)
            if set(extra_raw) - {"version", "models"} or not isinstance(extra_raw.get("models"), dict):
                raise PriceTableError(f"{extra_path}: an extra price file has `models` (a mapping) only")
            for name, entry in extra_raw["models"].items():
                if name in table.models:
                    raise PriceTableError(f"{extra_path}: models.{name}: already priced in {path}")
                try:
                    price = _ENTRY.validate_python(entry)
                    table.models[name] = price if isinstance(price, ModelPrice) else ModelPrice(per_image=price)
                except ValidationError as exc:
                    raise PriceTableError(f"{extra_path}: models.{name}: {reason(exc)}") from exc
        return cls(table)

    @property
    def version(self) -> int:
        return self._table.version

    @property
    def token_usd(self) -> Decimal:
        return self._table.token_usd

    @property
    def models(self) -> list[str]:
        return sorted(self._models)

    def model(self, name: str) -> ModelPrice:
        price = self._models.get(name)
        if price is None:
            raise GatewayError(ErrorCode.MODEL_NOT_FOUND, f"The model '{name}' has no price.", param="model")
        return price

    def rows(self) -> list[tuple[str, PriceRow, str]]:
        """(model, row, how it is charged: "image" | "tokens" | "megapixels") for every row, in
        table order; a megapixel-priced model's one row is its one-megapixel image."""
        out: list[tuple[str, PriceRow, str]] = []
        for name, p in self._models.items():
            if p.megapixels is not None:
                out.append((name, PriceRow(usd=p.megapixels.first), "megapixels"))
            out.extend((name, row, "tokens" if p.tokens else "image") for row in p.per_image)
        return out

    def quote(
        self, model: str, size: str, quality: str, n: int, *, prompt_bytes: int = 0, input_images: int = 0
    ) -> Quote:
        """The price of n images, and the tariff to charge them by.

        For token-priced models the quote is the reservation's upper bound: the per-image
        estimates plus the prompt (one token per byte) and the input images' allowance. A
        megapixel-priced model's image is priced from the size and the input images.
        """
        price = self.model(model)
        if n < 1:
            raise GatewayError(ErrorCode.INVALID_REQUEST, "n must be at least 1.", param="n")
        if price.megapixels is not None:
            per_usd = price.megapixels.per_image(size, input_images)
        else:
            row = next((r for r in price.per_image if r.matches(quality, size)), None)
            per_usd = row.usd if row else None
        if per_usd is None:
            raise GatewayError(
                ErrorCode.INVALID_REQUEST, f"No price for {model} at size {size}, quality {quality}.", param="size"
            )
        per_tokens = self.tokens_for(per_usd)
        total_usd = per_usd * n
        total_tokens = per_tokens * n
        tariff = gen.Tariff(
            per_image=gen.Cost(tokens=per_tokens, usd_micros=usd_micros(per_usd)),
            token_usd_micros=usd_micros(self.token_usd),
        )
        rates = price.tokens
        if rates is not None:
            tariff.input_text_usd_micros_per_million = usd_micros(rates.input_text)
            tariff.input_image_usd_micros_per_million = usd_micros(rates.input_image)
            tariff.output_usd_micros_per_million = usd_micros(rates.output)
            inputs_usd = (
                Decimal(prompt_bytes) * rates.input_text
                + Decimal(input_images * rates.input_image_allowance_tokens) * rates.input_image
            ) / 1_000_000
            total_usd += inputs_usd
            total_tokens += self.tokens_for(inputs_usd)
        quote = Quote(per_usd, total_usd, per_tokens, total_tokens, tariff)
        tariff.reserved.CopyFrom(quote.total)
        return quote

    def tokens_for(self, usd: Decimal) -> int:
        """Gateway tokens for a USD amount, rounded up: a paid image never costs zero tokens."""
        return max(1, math.ceil(usd / self._table.token_usd)) if usd > 0 else 0
