"""PricingService over a real grpc.aio server (port 0) on a SQLite file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.pricing.v1 import pricing_service_pb2 as pb
from pixelmesh.pricing.v1 import pricing_service_pb2_grpc
from pricing.db import migrate, open_database
from pricing.keys import KeyStore
from pricing.ledger import Ledger
from pricing.plans import Plans
from pricing.prices import PriceTable
from pricing.servicer import PricingServicer
from svckit.accounts import ADMIN_TOKEN_METADATA
from svckit.errors import ErrorCode, from_rpc_error
from svckit.ids import new_generation_id

TOKEN = "admin-secret"
ADMIN = ((ADMIN_TOKEN_METADATA, TOKEN),)


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[pricing_service_pb2_grpc.PricingServiceStub]:
    db = open_database(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    await migrate(db)
    plans, prices = Plans.load(), PriceTable.load()
    keys = KeyStore(db, plans)
    await keys.seed_dev_keys("pm-dev", 1000)
    server = grpc.aio.server()
    pricing_service_pb2_grpc.add_PricingServiceServicer_to_server(
        PricingServicer(keys, Ledger(db, prices, plans), prices, TOKEN), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield pricing_service_pb2_grpc.PricingServiceStub(ch)
    await server.stop(None)
    await db.close()


def generation(key: pb.ApiKey, n: int = 1) -> gen.Generation:
    return gen.Generation(
        id=new_generation_id(),
        account_id=key.account_id,
        api_key_id=key.id,
        model="pixelmesh-sketch",
        params=gen.GenerationParams(model="pixelmesh-sketch", prompt="p", n=n, size="256x256", quality="standard"),
    )


async def test_admin_calls_need_the_token(stub) -> None:  # noqa: ANN001
    for metadata in ((), ((ADMIN_TOKEN_METADATA, "wrong"),)):
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await stub.ListApiKeys(pb.ListApiKeysRequest(), metadata=metadata)
        assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    listed = await stub.ListApiKeys(pb.ListApiKeysRequest(), metadata=ADMIN)
    assert [k.account_id for k in listed.api_keys] == ["acct_dev"]


async def test_limits_travel_as_error_metadata(stub) -> None:  # noqa: ANN001
    created = await stub.CreateApiKey(
        pb.CreateApiKeyRequest(plan="free", name="t", limits=pb.KeyLimits(max_concurrent=0)), metadata=ADMIN
    )
    assert created.api_key.limits.HasField("max_concurrent") and not created.api_key.limits.HasField("images_per_day")
    await stub.CreditAccount(pb.CreditAccountRequest(account_id=created.api_key.account_id, tokens=100), metadata=ADMIN)
    for _ in range(5):
        await stub.ReserveGeneration(pb.ReserveGenerationRequest(generation=generation(created.api_key)))
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.ReserveGeneration(pb.ReserveGenerationRequest(generation=generation(created.api_key)))
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    err = from_rpc_error(exc.value)
    assert err.code is ErrorCode.RATE_LIMITED
    assert set(err.metadata) == {
        "retry_after_seconds",
        "ratelimit_limit_requests",
        "ratelimit_remaining_requests",
        "ratelimit_reset_requests",
    }
    assert 55 <= int(err.metadata["retry_after_seconds"]) <= 60


async def test_insufficient_balance_and_release(stub) -> None:  # noqa: ANN001
    created = await stub.CreateApiKey(pb.CreateApiKeyRequest(plan="pro", name="t"), metadata=ADMIN)
    g = generation(created.api_key, n=2)
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.ReserveGeneration(pb.ReserveGenerationRequest(generation=g))
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert from_rpc_error(exc.value).code is ErrorCode.INSUFFICIENT_BALANCE
    await stub.CreditAccount(pb.CreditAccountRequest(account_id=created.api_key.account_id, tokens=2), metadata=ADMIN)
    r = await stub.ReserveGeneration(pb.ReserveGenerationRequest(generation=g))
    assert r.total.tokens == 2
    assert (
        await stub.ReleaseGeneration(
            pb.ReleaseGenerationRequest(generation_id=g.id, reason=pb.RELEASE_REASON_NOT_DISPATCHED)
        )
    ).released
    assert not (await stub.ReleaseGeneration(pb.ReleaseGenerationRequest(generation_id=g.id))).released
    ledger = await stub.ListLedgerEntries(
        pb.ListLedgerEntriesRequest(account_id=created.api_key.account_id), metadata=ADMIN
    )
    assert [(e.kind, e.amount_tokens, e.balance_after) for e in ledger.entries] == [
        ("credit", 2, 2),
        ("reserve", -2, 0),
        ("release", 2, 2),
    ]


async def test_usage_with_an_api_key_sees_only_its_account(stub) -> None:  # noqa: ANN001
    r = await stub.GetUsage(
        pb.GetUsageRequest(account_id="someone-else"), metadata=(("authorization", "Bearer pm-dev"),)
    )
    assert r.account_id == "acct_dev" and not r.rows
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GetUsage(pb.GetUsageRequest())
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await stub.GetUsage(pb.GetUsageRequest(start_date="2026-13-01"), metadata=(("authorization", "Bearer pm-dev"),))
    assert from_rpc_error(exc.value).param == "start_date"


async def test_prices_are_listed_from_the_table(stub) -> None:  # noqa: ANN001
    r = await stub.ListPrices(pb.ListPricesRequest())
    assert r.token_usd_micros == 10_000
    sketch = [row for row in r.rows if row.model == "pixelmesh-sketch"]
    assert [(row.per_image.tokens, row.per_image.usd_micros, row.token_priced) for row in sketch] == [
        (1, 10_000, False)
    ]
    assert any(row.token_priced for row in r.rows if row.model == "gpt-image-1")
    flux2 = [(row.per_image.usd_micros, row.megapixel_priced) for row in r.rows if row.model == "flux-2-pro"]
    assert flux2 == [(30_000, True)]


async def test_a_flux_2_reservation_prices_its_size_and_input_images(stub) -> None:  # noqa: ANN001
    created = await stub.CreateApiKey(pb.CreateApiKeyRequest(plan="pro", name="t"), metadata=ADMIN)
    await stub.CreditAccount(pb.CreditAccountRequest(account_id=created.api_key.account_id, tokens=50), metadata=ADMIN)

    def flux2(size: str, **inputs) -> gen.Generation:  # noqa: ANN003
        params = gen.GenerationParams(model="flux-2-pro", prompt="p", n=1, size=size, **inputs)
        return gen.Generation(
            id=new_generation_id(),
            account_id=created.api_key.account_id,
            api_key_id=created.api_key.id,
            model="flux-2-pro",
            params=params,
        )

    plain = await stub.ReserveGeneration(pb.ReserveGenerationRequest(generation=flux2("1024x1024")))
    assert (plain.total.tokens, plain.total.usd_micros) == (3, 30_000)
    # The v2 image_url counts as an input image, like an uploaded one: +1.5c a megapixel.
    by_url = await stub.ReserveGeneration(
        pb.ReserveGenerationRequest(generation=flux2("1024x1024", image_url="https://img.example/a.png"))
    )
    two = [gen.InputImage(url="https://img.example/a.png"), gen.InputImage(url="https://img.example/b.png")]
    uploads = await stub.ReserveGeneration(pb.ReserveGenerationRequest(generation=flux2("2048x2048", input_images=two)))
    assert by_url.total.usd_micros == 45_000
    assert (uploads.total.tokens, uploads.total.usd_micros) == (11, 105_000)  # 3 + 3 x 1.5 + 2 x 1.5 cents
