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
from presenters.catalog import model_info, model_price, price_quote
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
        out.append(model_price(size, quality, quote.per_image))
    return out


async def _model(mesh: Mesh, m: routing_pb.Model) -> dict:
    return model_info(m, await _prices(mesh, m))


@router.get("/v1/models", response_model=docs.ModelList, responses=docs.error_responses())
async def models(who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    listed = await mesh.list_models()
    data = await asyncio.gather(*(_model(mesh, m) for m in listed))
    return JSONResponse({"object": "list", "data": list(data)})


@router.get("/v1/models/{model}", response_model=docs.ModelInfo, responses=docs.error_responses())
async def model(model: str, who: Caller = auth, mesh: Mesh = mesh_dep) -> JSONResponse:
    return JSONResponse(await _model(mesh, await mesh.get_model(model)))


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
    return JSONResponse(price_quote(checked, quote, base))
