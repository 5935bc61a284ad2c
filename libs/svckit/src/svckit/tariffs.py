"""What a finished generation costs: one rule, used by pricing's capture and by the worker.

Pricing reserves `tariff.reserved` at submit. On success:
- a fixed-price model charges `per_image` for each image that came back;
- a token-priced model (gpt-image-*) charges the upstream's reported usage at the
  tariff's per-million rates, converted to gateway tokens (rounded up); when the
  upstream reported no usage, it falls back to the per-image estimate.
The charge never exceeds the reservation: the reservation is the price the client
agreed to, so a usage above it is the gateway's loss, never the client's surprise.
"""

from __future__ import annotations

from pixelmesh.common.v1 import generation_pb2 as gen

MILLION = 1_000_000


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def is_token_priced(tariff: gen.Tariff) -> bool:
    return bool(
        tariff.output_usd_micros_per_million
        or tariff.input_text_usd_micros_per_million
        or tariff.input_image_usd_micros_per_million
    )


def usage_usd_micros(tariff: gen.Tariff, usage: gen.Usage) -> int:
    """USD micros of the usage at the tariff's rates (rounded up to a whole micro-dollar).

    Input tokens without a text/image split are counted as text.
    """
    text = usage.input_text_tokens
    image = usage.input_image_tokens
    if not text and not image:
        text = usage.input_tokens
    scaled = (
        text * tariff.input_text_usd_micros_per_million
        + image * tariff.input_image_usd_micros_per_million
        + usage.output_tokens * tariff.output_usd_micros_per_million
    )
    return _ceil_div(scaled, MILLION)


def _has_usage(usage: gen.Usage) -> bool:
    return bool(usage.input_tokens or usage.output_tokens or usage.total_tokens)


def final_cost(tariff: gen.Tariff, images_produced: int, usage: gen.Usage | None = None) -> gen.Cost:
    """The charge of a generation that succeeded with `images_produced` images."""
    if images_produced <= 0:
        return gen.Cost()
    if is_token_priced(tariff) and usage is not None and _has_usage(usage):
        usd = usage_usd_micros(tariff, usage)
        tokens = _ceil_div(usd, tariff.token_usd_micros) if tariff.token_usd_micros > 0 else 0
        cost = gen.Cost(tokens=tokens, usd_micros=usd)
    else:
        cost = gen.Cost(
            tokens=tariff.per_image.tokens * images_produced,
            usd_micros=tariff.per_image.usd_micros * images_produced,
        )
    if tariff.HasField("reserved"):
        cost = gen.Cost(
            tokens=min(cost.tokens, tariff.reserved.tokens),
            usd_micros=min(cost.usd_micros, tariff.reserved.usd_micros),
        )
    return cost


__all__ = ["final_cost", "is_token_priced", "usage_usd_micros"]
