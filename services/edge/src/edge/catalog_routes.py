"""The model catalog and prices: GET /v1/models, GET /v1/models/{model}, POST /api/v2/price."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from edge import docs
from edge.deps import auth, mesh_dep, parse_json
from edge.mesh import Caller, Mesh
from edge.schemas import PriceBody
from pixelmesh.routing.v1 import routing_service_pb2 as routing_pb
from presenters.generation import usd
from svckit.errors import GatewayError

router = APIRouter(tags=["Models and prices"])


async def _prices(mesh: Mesh, model: routing_pb.Model) -> list[dict]:
    """Price of one image at every listed size and quality ("auto" aliases left out)."""
    qualities = [q for q in model.qualities if q != "auto" or model.default_quality == "auto"]
    combos = [(s, q) for s in model.sizes for q in qualities]
    quotes = await asyncio.gather(*(mesh.quote(model.id, s, q, 1) for s, q in combos), return_exceptions=True)
    out = []
    for (size, quality), quote in zip(combos, quotes, strict=True):
        if isinstance(quote, GatewayError):
            continue
        if isinstance(quote, BaseException):
            raise quote
        out.append(
            {
                "size": size,
                "quality": quality,
                "tokens": quote.per_image.tokens,
                "usd": usd(quote.per_image.usd_micros),
            }
        )
    return out


def _rule(rule: routing_pb.ImageInputRule) -> dict:
    return {
        "sizes": list(rule.sizes),
        "default_size": rule.default_size,
        "max_images": rule.max_images,
        "formats": list(rule.formats),
        "max_bytes": rule.max_bytes,
        "square": rule.square,
        "mask": rule.mask,
    }


async def model_info(mesh: Mesh, m: routing_pb.Model) -> dict:
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
        "capabilities": {
            "generations": True,
            "edits": m.HasField("edits"),
            "variations": m.HasField("variations"),
            "streaming": m.max_partial_images > 0,
            "image_input": "image_url" in m.parameters or m.HasField("edits"),
            "token_usage": m.token_usage,
        },
        "max_partial_images": m.max_partial_images,
        "edits": _rule(m.edits) if m.HasField("edits") else None,
        "variations": _rule(m.variations) if m.HasField("variations") else None,
        "eta_seconds": m.eta_seconds,
        "pricing": {"currency": "USD", "per_image": await _prices(mesh, m)},
    }


@router.get("/v1/models", response_model=docs.ModelList, responses=docs.error_responses())
async def models(who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    listed = await mesh.list_models()
    data = await asyncio.gather(*(model_info(mesh, m) for m in listed))
    return JSONResponse({"object": "list", "data": list(data)})


@router.get("/v1/models/{model}", response_model=docs.ModelInfo, responses=docs.error_responses())
async def model(model: str, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    return JSONResponse(await model_info(mesh, await mesh.get_model(model)))


@router.post(
    "/api/v2/price",
    summary="What a request would cost, before it is made",
    openapi_extra=docs.json_body(PriceBody),
    response_model=docs.PriceQuote,
    responses=docs.error_responses(),
)
async def price(request: Request, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    """Routing checks the request as it would a submit; pricing quotes it (size and quality
    surcharges included) and the model's default size and quality as the base."""
    body = await parse_json(request, PriceBody)
    checked = await mesh.validate(body.to_params())
    m = checked.model
    quote, base = await asyncio.gather(
        mesh.quote(m.id, checked.size, checked.quality, checked.n),
        mesh.quote(m.id, m.default_size, m.default_quality, 1),
    )
    per_image = usd(quote.per_image.usd_micros)
    base_usd = usd(base.per_image.usd_micros)
    return JSONResponse(
        {
            "model": m.id,
            "size": checked.size,
            "quality": checked.quality,
            "n": checked.n,
            "width": checked.width,
            "height": checked.height,
            "tokens": quote.total.tokens,
            "cost_usd": usd(quote.total.usd_micros),
            "per_image": {
                "size": checked.size,
                "quality": checked.quality,
                "tokens": quote.per_image.tokens,
                "usd": per_image,
            },
            "base_per_image": {
                "size": m.default_size,
                "quality": m.default_quality,
                "tokens": base.per_image.tokens,
                "usd": base_usd,
            },
            "surcharge_per_image_usd": round(per_image - base_usd, 6),
            "currency": "USD",
        }
    )
