"""gRPC adapter of the pricing core."""

from __future__ import annotations

import grpc

from pixelmesh.common.v1 import generation_pb2
from pixelmesh.pricing.v1 import pricing_service_pb2 as pb
from pixelmesh.pricing.v1 import pricing_service_pb2_grpc
from pricing.core import KeyStore, PriceTable, Quote
from svckit.errors import GatewayError, abort_with


class PricingServicer(pricing_service_pb2_grpc.PricingServiceServicer):
    def __init__(self, keys: KeyStore, prices: PriceTable) -> None:
        self._keys = keys
        self._prices = prices

    async def Authenticate(self, request: pb.AuthenticateRequest, context: grpc.aio.ServicerContext) -> pb.AuthenticateResponse:
        try:
            p = self._keys.authenticate(request.api_key)
        except GatewayError as err:
            await abort_with(context, err)
        return pb.AuthenticateResponse(
            account_id=p.account_id, api_key_id=p.api_key_id, plan=p.plan, retention_class=p.retention_class
        )

    async def QuotePrice(self, request: pb.QuotePriceRequest, context: grpc.aio.ServicerContext) -> pb.QuotePriceResponse:
        try:
            q = self._prices.quote(request.model, request.size, request.quality, request.n or 1)
        except GatewayError as err:
            await abort_with(context, err)
        return pb.QuotePriceResponse(
            total=generation_pb2.Cost(tokens=q.total_tokens, usd_micros=Quote.usd_micros(q.total_usd)),
            per_image=generation_pb2.Cost(tokens=q.per_image_tokens, usd_micros=Quote.usd_micros(q.per_image_usd)),
        )
