"""gRPC adapter of the pricing core: keys, prices, reservations, balances, usage."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.pricing.v1 import pricing_service_pb2 as pb
from pixelmesh.pricing.v1 import pricing_service_pb2_grpc
from pricing import usage as usage_core
from pricing.keys import KeyInfo, KeyStore
from pricing.ledger import Balance, Ledger
from pricing.prices import PriceTable, usd_micros
from svckit.accounts import ADMIN_TOKEN_METADATA, is_operator, metadata_value
from svckit.errors import ErrorCode, GatewayError, abort_with, invalid

T = TypeVar("T")


def _ts(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def key_proto(k: KeyInfo) -> pb.ApiKey:
    out = pb.ApiKey(
        id=k.id,
        account_id=k.account_id,
        name=k.name,
        plan=k.plan,
        prefix=k.prefix,
        create_time=_ts(k.created_ms),
        limits=pb.KeyLimits(**k.limits),
    )
    if k.revoked_ms is not None:
        out.revoke_time.CopyFrom(_ts(k.revoked_ms))
    return out


def balance_proto(b: Balance) -> pb.Balance:
    return pb.Balance(account_id=b.account_id, available_tokens=b.available_tokens, reserved_tokens=b.reserved_tokens)


def limits_dict(limits: pb.KeyLimits) -> dict[str, int]:
    # Every field of KeyLimits is optional: the fields listed are the ones present.
    return {f.name: value for f, value in limits.ListFields()}


class PricingServicer(pricing_service_pb2_grpc.PricingServiceServicer):
    def __init__(self, keys: KeyStore, ledger: Ledger, prices: PriceTable, admin_token: str) -> None:
        self._keys = keys
        self._ledger = ledger
        self._prices = prices
        self._admin_token = admin_token
        self._db = ledger.database  # usage reads the same database

    async def _run(self, context: grpc.aio.ServicerContext, call: Awaitable[T]) -> T:
        try:
            return await call
        except GatewayError as err:
            await abort_with(context, err)

    def _is_admin(self, context: grpc.aio.ServicerContext) -> bool:
        return is_operator(context.invocation_metadata(), self._admin_token)

    async def _admin(self, context: grpc.aio.ServicerContext, call: Callable[[], Awaitable[T]]) -> T:
        if not self._is_admin(context):
            await abort_with(
                context,
                GatewayError(
                    ErrorCode.UNAUTHENTICATED,
                    "This is an admin call: send the operator token (PRICING_ADMIN_TOKEN) "
                    f"as '{ADMIN_TOKEN_METADATA}' metadata.",
                ),
            )
        return await self._run(context, call())

    # ---- public ------------------------------------------------------------------------
    async def Authenticate(
        self, request: pb.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> pb.AuthenticateResponse:
        p = await self._run(context, self._keys.authenticate(request.api_key))
        return pb.AuthenticateResponse(
            account_id=p.account_id, api_key_id=p.api_key_id, plan=p.plan, retention_class=p.retention_class
        )

    async def QuotePrice(
        self, request: pb.QuotePriceRequest, context: grpc.aio.ServicerContext
    ) -> pb.QuotePriceResponse:
        try:
            q = self._prices.quote(request.model, request.size, request.quality, request.n or 1)
        except GatewayError as err:
            await abort_with(context, err)
        return pb.QuotePriceResponse(total=q.total, per_image=q.per_image, tariff=q.tariff)

    async def ListPrices(
        self, request: pb.ListPricesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListPricesResponse:
        rows = [
            pb.PriceRow(
                model=model,
                quality=row.quality,
                size=row.size,
                token_priced=charged_by == "tokens",
                megapixel_priced=charged_by == "megapixels",
                per_image=gen.Cost(tokens=self._prices.tokens_for(row.usd), usd_micros=usd_micros(row.usd)),
            )
            for model, row, charged_by in self._prices.rows()
        ]
        return pb.ListPricesResponse(
            version=self._prices.version, token_usd_micros=usd_micros(self._prices.token_usd), rows=rows
        )

    async def ReserveGeneration(
        self, request: pb.ReserveGenerationRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReserveGenerationResponse:
        r = await self._run(context, self._ledger.reserve(request.generation))
        return pb.ReserveGenerationResponse(total=r.total, per_image=r.per_image, tariff=r.tariff)

    async def ReleaseGeneration(
        self, request: pb.ReleaseGenerationRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReleaseGenerationResponse:
        released = await self._run(context, self._ledger.release(request.generation_id, request.reason))
        return pb.ReleaseGenerationResponse(released=released)

    async def GetUsage(self, request: pb.GetUsageRequest, context: grpc.aio.ServicerContext) -> pb.GetUsageResponse:
        if self._is_admin(context):
            account_id = request.account_id
            if not account_id:
                await abort_with(context, invalid("Name the account.", "account_id"))
        else:
            header = metadata_value(context.invocation_metadata(), "authorization")
            scheme, _, secret = header.partition(" ")
            if scheme.lower() != "bearer":
                secret = ""
            account_id = (await self._run(context, self._keys.authenticate(secret.strip()))).account_id
        try:
            first, last = usage_core.period(request.start_date, request.end_date, dt.datetime.now(dt.UTC).date())
        except GatewayError as err:
            await abort_with(context, err)
        rows = await usage_core.usage(self._db, account_id, first, last)
        out = pb.GetUsageResponse(account_id=account_id, start_date=first.isoformat(), end_date=last.isoformat())
        for r in rows:
            out.rows.add(
                date=r.date,
                model=r.model,
                api_key_id=r.api_key_id,
                generations=r.generations,
                images=r.images,
                cost=gen.Cost(tokens=r.tokens, usd_micros=r.usd_micros),
            )
        out.total.tokens = sum(r.tokens for r in rows)
        out.total.usd_micros = sum(r.usd_micros for r in rows)
        return out

    # ---- admin -------------------------------------------------------------------------
    async def CreateApiKey(
        self, request: pb.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateApiKeyResponse:
        key, secret = await self._admin(
            context,
            lambda: self._keys.create(
                plan=request.plan or self._keys.default_plan,
                name=request.name,
                account_id=request.account_id,
                limits=limits_dict(request.limits),
            ),
        )
        return pb.CreateApiKeyResponse(api_key=key_proto(key), secret=secret)

    async def ListApiKeys(
        self, request: pb.ListApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListApiKeysResponse:
        keys = await self._admin(context, lambda: self._keys.list(request.account_id))
        return pb.ListApiKeysResponse(api_keys=[key_proto(k) for k in keys])

    async def RevokeApiKey(
        self, request: pb.RevokeApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> pb.RevokeApiKeyResponse:
        key = await self._admin(context, lambda: self._keys.revoke(request.api_key_id))
        return pb.RevokeApiKeyResponse(api_key=key_proto(key))

    async def CreditAccount(
        self, request: pb.CreditAccountRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreditAccountResponse:
        balance, applied = await self._admin(
            context, lambda: self._ledger.credit(request.account_id, request.tokens, request.reference, request.note)
        )
        return pb.CreditAccountResponse(balance=balance_proto(balance), applied=applied)

    async def GetBalance(
        self, request: pb.GetBalanceRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBalanceResponse:
        balance = await self._admin(context, lambda: self._ledger.balance(request.account_id))
        return pb.GetBalanceResponse(balance=balance_proto(balance))

    async def ListLedgerEntries(
        self, request: pb.ListLedgerEntriesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListLedgerEntriesResponse:
        async def both() -> tuple[list, Balance]:
            balance = await self._ledger.balance(request.account_id)
            return await self._ledger.entries(request.account_id, request.after_id, request.page_size or 500), balance

        rows, balance = await self._admin(context, both)
        out = pb.ListLedgerEntriesResponse(balance=balance_proto(balance))
        for r in rows:
            out.entries.add(
                id=r.id,
                account_id=r.account_id,
                kind=r.kind,
                reference=r.reference,
                amount_tokens=r.amount_tokens,
                balance_after=r.balance_after,
                charged=gen.Cost(tokens=r.charged_tokens, usd_micros=r.charged_usd_micros),
                api_key_id=r.api_key_id,
                model=r.model,
                images=r.images,
                note=r.note,
                create_time=_ts(r.created_ms),
            )
        return out
