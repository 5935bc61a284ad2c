"""The model catalog, prices and usage as the REST routes answer them (GET /v1/models,
POST /api/v2/price, GET /api/v2/usage)."""

from __future__ import annotations

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.pricing.v1 import pricing_service_pb2 as pricing_pb
from pixelmesh.routing.v1 import routing_service_pb2 as routing_pb
from presenters.generation import usd


def model_price(size: str, quality: str, per_image: gen.Cost) -> dict:
    """The price of one image at a size and quality."""
    return {"size": size, "quality": quality, "tokens": per_image.tokens, "usd": usd(per_image.usd_micros)}


def input_rule(rule: routing_pb.ImageInputRule) -> dict:
    return {
        "sizes": list(rule.sizes),
        "default_size": rule.default_size,
        "max_images": rule.max_images,
        "formats": list(rule.formats),
        "max_bytes": rule.max_bytes,
        "square": rule.square,
        "mask": rule.mask,
    }


def option_rule(rule: routing_pb.ProviderOptionRule) -> dict:
    """A provider option a model takes: JSON type, bounds, values, the providers taking it."""
    return {
        "type": rule.type,
        "minimum": rule.minimum if rule.HasField("minimum") else None,
        "maximum": rule.maximum if rule.HasField("maximum") else None,
        "values": list(rule.values) or None,
        "providers": list(rule.providers) or None,
        "description": rule.description,
    }


def model_info(m: routing_pb.Model, prices: list[dict]) -> dict:
    """A model of GET /v1/models: OpenAI's model object, then what the catalog says it takes
    and `prices` (model_price of each listed size and quality)."""
    custom = None
    if m.HasField("custom_size"):
        c = m.custom_size
        custom = {
            "min_side": c.min_side,
            "max_side": c.max_side,
            "multiple_of": c.multiple_of,
            "max_aspect": round(c.max_aspect, 3),
            "max_pixels": c.max_pixels,
        }
    return {
        "id": m.id,
        "object": "model",
        "created": m.created,
        "owned_by": m.owned_by,
        "type": "image",
        "display_name": m.display_name,
        "aliases": list(m.aliases),
        "sizes": list(m.sizes),
        "default_size": m.default_size,
        "custom_size": custom,
        "max_images": m.max_images,
        "max_prompt_chars": m.max_prompt_chars,
        "qualities": list(m.qualities),
        "default_quality": m.default_quality,
        "styles": list(m.styles),
        "backgrounds": list(m.backgrounds),
        "moderations": list(m.moderations),
        "output_formats": list(m.output_formats),
        "response_formats": list(m.response_formats),
        "parameters": list(m.parameters),
        "provider_options": {rule.name: option_rule(rule) for rule in m.provider_options},
        "capabilities": {
            "generations": True,
            "edits": m.HasField("edits"),
            "variations": m.HasField("variations"),
            "streaming": m.max_partial_images > 0,
            "image_input": "image_url" in m.parameters or m.HasField("edits"),
            "token_usage": m.token_usage,
        },
        "max_partial_images": m.max_partial_images,
        "edits": input_rule(m.edits) if m.HasField("edits") else None,
        "variations": input_rule(m.variations) if m.HasField("variations") else None,
        "eta_seconds": m.eta_seconds,
        "pricing": {"currency": "USD", "per_image": prices},
    }


def price_quote(
    checked: routing_pb.ValidateGenerationResponse,
    quote: pricing_pb.QuotePriceResponse,
    base: pricing_pb.QuotePriceResponse,
) -> dict:
    """POST /api/v2/price: the checked request's price, and the model's default size and
    quality as the base its surcharge is measured from."""
    m = checked.model
    per_image = model_price(checked.size, checked.quality, quote.per_image)
    base_per_image = model_price(m.default_size, m.default_quality, base.per_image)
    return {
        "model": m.id,
        "size": checked.size,
        "quality": checked.quality,
        "n": checked.n,
        "width": checked.width,
        "height": checked.height,
        "tokens": quote.total.tokens,
        "cost_usd": usd(quote.total.usd_micros),
        "per_image": per_image,
        "base_per_image": base_per_image,
        "surcharge_per_image_usd": round(per_image["usd"] - base_per_image["usd"], 6),
        "currency": "USD",
    }


def usage_report(r: pricing_pb.GetUsageResponse) -> dict:
    """GET /api/v2/usage: spend per day, model and key, and the total."""
    return {
        "object": "usage",
        "account_id": r.account_id,
        "start_date": r.start_date,
        "end_date": r.end_date,
        "data": [
            {
                "date": u.date,
                "model": u.model,
                "api_key_id": u.api_key_id,
                "generations": u.generations,
                "images": u.images,
                "tokens_spent": u.cost.tokens,
                "cost_usd": usd(u.cost.usd_micros),
            }
            for u in r.rows
        ],
        "total": {"tokens_spent": r.total.tokens, "cost_usd": usd(r.total.usd_micros)},
    }
