"""The ledger suite, on SQLite and on a real PostgreSQL (deploy/local/postgres.sh).

Drives pricing's transport-free core (keys, limits, reservations, settlement) on a
migrated database: no gRPC, no Kafka, so each rule is checked on its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import inspect

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.pricing.v1.pricing_service_pb2 import ReleaseReason
from pricing.db import metadata, migrate, open_database
from pricing.keys import KeyStore
from pricing.ledger import Ledger
from pricing.plans import Plans
from pricing.prices import PriceTable
from pricing.usage import usage
from svckit.errors import ErrorCode, GatewayError
from svckit.ids import new_generation_id

DAY_MS = 86_400_000


class Clock:
    def __init__(self) -> None:
        self.ms = 20_775 * 86_400_000 + 12 * 3_600_000  # noon UTC, 2026-11-18

    def __call__(self) -> int:
        return self.ms


@dataclass
class Store:
    url: str
    keys: KeyStore
    ledger: Ledger
    clock: Clock
    databases: list


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'pricing.db'}"
    return await request.getfixturevalue("postgres").new_database()


async def open_store(url: str, clock: Clock) -> tuple[KeyStore, Ledger, object]:
    db = open_database(url)
    await migrate(db)
    plans, prices = Plans.load(), PriceTable.load()
    return KeyStore(db, plans, clock), Ledger(db, prices, plans, clock), db


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    clock = Clock()
    keys, ledger, db = await open_store(database_url, clock)
    s = Store(database_url, keys, ledger, clock, [db])
    yield s
    for d in s.databases:
        await d.close()


def generation(key, n: int = 1, model: str = "pixelmesh-sketch", **params) -> gen.Generation:  # noqa: ANN001
    p = gen.GenerationParams(model=model, prompt=params.pop("prompt", "a fox"), n=n, size="512x512", quality="standard", **params)
    return gen.Generation(
        id=new_generation_id(), account_id=key.account_id, api_key_id=key.id, model=model, params=p, quality=p.quality,
    )


async def funded_key(s: Store, tokens: int, plan: str = "pro", **limits: int):  # noqa: ANN201
    key, _ = await s.keys.create(plan=plan, name="test", limits=limits or None)
    if tokens:
        await s.ledger.credit(key.account_id, tokens, note="test funds")
    return key


async def explain(s: Store, account_id: str) -> list:
    """The balance, row by row: each row's balance_after is the previous one plus its amount."""
    rows = await s.ledger.entries(account_id)
    running = 0
    for row in rows:
        running += row.amount_tokens
        assert row.balance_after == running, (row.kind, row.reference)
    balance = await s.ledger.balance(account_id)
    assert balance.available_tokens == running
    return rows


async def test_migrations_build_the_schema_the_code_uses(store: Store) -> None:
    db = store.databases[0]
    tables = await db.run(lambda c: {t: {col["name"] for col in inspect(c).get_columns(t)} for t in inspect(c).get_table_names()})
    for table in metadata.sorted_tables:
        assert tables.get(table.name) == {c.name for c in table.columns}, table.name
    await migrate(db)  # a second start finds the schema at head


async def test_success_captures_the_images_produced(store: Store) -> None:
    key = await funded_key(store, 100)
    g = generation(key, n=4)
    r = await store.ledger.reserve(g)
    assert r.total.tokens == 4 and r.tariff.reserved.tokens == 4
    assert (await store.ledger.balance(key.account_id)).available_tokens == 96
    assert (await store.ledger.balance(key.account_id)).reserved_tokens == 4
    assert await store.ledger.capture(g.id, 3)  # one image of four did not come back
    balance = await store.ledger.balance(key.account_id)
    assert (balance.available_tokens, balance.reserved_tokens) == (97, 0)
    rows = await explain(store, key.account_id)
    assert [(r.kind, r.amount_tokens, r.charged_tokens) for r in rows] == [("credit", 100, 0), ("reserve", -4, 0), ("capture", 1, 3)]


async def test_redelivered_events_never_charge_or_refund_twice(store: Store) -> None:
    key = await funded_key(store, 10)
    ok, failed = generation(key, n=2), generation(key, n=3)
    await store.ledger.reserve(ok)
    await store.ledger.reserve(failed)
    done = gen.Generation(id=ok.id, state=gen.GENERATION_STATE_SUCCEEDED, images=[gen.ImageRef(index=0), gen.ImageRef(index=1)])
    lost = gen.Generation(id=failed.id, state=gen.GENERATION_STATE_FAILED, error=gen.GenerationError(code="provider_error"))
    for _ in range(3):
        await store.ledger.settle(done)
        await store.ledger.settle(lost)
    # after the first terminal state, another one changes nothing (the first wins)
    assert not await store.ledger.settle(gen.Generation(id=ok.id, state=gen.GENERATION_STATE_CANCELLED))
    assert not await store.ledger.settle(gen.Generation(id=failed.id, state=gen.GENERATION_STATE_SUCCEEDED, images=[gen.ImageRef()]))
    rows = await explain(store, key.account_id)
    assert sorted(r.kind for r in rows) == ["capture", "credit", "release", "reserve", "reserve"]
    assert (await store.ledger.balance(key.account_id)).available_tokens == 8


async def test_failure_releases_everything(store: Store) -> None:
    key = await funded_key(store, 5)
    g = generation(key, n=2)
    await store.ledger.reserve(g)
    assert await store.ledger.release(g.id, ReleaseReason.RELEASE_REASON_FAILED, "provider_error")
    assert not await store.ledger.release(g.id, ReleaseReason.RELEASE_REASON_FAILED, "again")
    assert not await store.ledger.capture(g.id, 2)
    assert (await store.ledger.balance(key.account_id)).available_tokens == 5


async def test_fifty_concurrent_reserves_against_ten_images(store: Store) -> None:
    key = await funded_key(store, 10)
    ledgers = [store.ledger]
    if store.url.startswith("postgresql"):  # a second "replica": its own database and pool
        _, second, db = await open_store(store.url, store.clock)
        store.databases.append(db)
        ledgers.append(second)
    gens = [generation(key) for _ in range(50)]
    results = await asyncio.gather(
        *(ledgers[i % len(ledgers)].reserve(g) for i, g in enumerate(gens)), return_exceptions=True
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, GatewayError)]
    assert len(ok) == 10, results
    assert len(refused) == 40 and {e.code for e in refused} == {ErrorCode.INSUFFICIENT_BALANCE}
    assert (await store.ledger.balance(key.account_id)).available_tokens == 0
    for g, r in zip(gens, results, strict=True):
        if not isinstance(r, BaseException):
            assert await store.ledger.capture(g.id, 1)
    balance = await store.ledger.balance(key.account_id)
    assert (balance.available_tokens, balance.reserved_tokens) == (0, 0)
    await explain(store, key.account_id)


async def test_free_key_gets_five_images_a_minute(store: Store) -> None:
    key = await funded_key(store, 1000, plan="free", max_concurrent=0)
    start = store.clock.ms
    for i in range(5):
        store.clock.ms = start + i * 2000
        await store.ledger.reserve(generation(key))
    store.clock.ms = start + 12_000
    with pytest.raises(GatewayError) as exc:
        await store.ledger.reserve(generation(key))
    err = exc.value
    assert err.code is ErrorCode.RATE_LIMITED
    # the first image leaves the window 60 s after it was admitted: 48 s from now
    assert err.metadata == {
        "retry_after_seconds": "48",
        "ratelimit_limit_requests": "5",
        "ratelimit_remaining_requests": "0",
        "ratelimit_reset_requests": "48s",
    }
    store.clock.ms = start + 60_001
    await store.ledger.reserve(generation(key))  # one slot is free again
    with pytest.raises(GatewayError):
        await store.ledger.reserve(generation(key))
    # a request that asks for more images than the window frees waits longer
    # (at +62 s the window holds the images of +4, +6, +8 and +60 s: three more need two
    # of them gone, and the second leaves at +66 s)
    store.clock.ms = start + 62_001
    with pytest.raises(GatewayError) as exc:
        await store.ledger.reserve(generation(key, n=3))
    assert exc.value.metadata["retry_after_seconds"] == "4"


async def test_daily_quota_and_what_a_failure_gives_back(store: Store) -> None:
    key = await funded_key(store, 1000, plan="free", images_per_minute=0, max_concurrent=0)
    gens = [generation(key, n=10) for _ in range(5)]
    for g in gens:
        await store.ledger.reserve(g)
    with pytest.raises(GatewayError) as exc:
        await store.ledger.reserve(generation(key))
    assert exc.value.code is ErrorCode.RATE_LIMITED
    assert exc.value.metadata["retry_after_seconds"] == str(12 * 3600)  # midnight UTC
    assert exc.value.metadata["ratelimit_limit_requests"] == "50"
    await store.ledger.release(gens[0].id, ReleaseReason.RELEASE_REASON_FAILED, "provider_error")
    await store.ledger.reserve(generation(key, n=10))
    store.clock.ms += 12 * 3_600_000  # the next day
    await store.ledger.reserve(generation(key, n=10))


async def test_concurrency_cap(store: Store) -> None:
    key = await funded_key(store, 1000, plan="free", images_per_minute=0)
    first, second = generation(key), generation(key)
    await store.ledger.reserve(first)
    await store.ledger.reserve(second)
    with pytest.raises(GatewayError) as exc:
        await store.ledger.reserve(generation(key))
    assert exc.value.code is ErrorCode.RATE_LIMITED and exc.value.metadata["ratelimit_limit_requests"] == "2"
    await store.ledger.capture(first.id, 1)
    await store.ledger.reserve(generation(key))


async def test_insufficient_balance_comes_before_limits(store: Store) -> None:
    key = await funded_key(store, 0, plan="free")
    with pytest.raises(GatewayError) as exc:
        await store.ledger.reserve(generation(key))
    assert exc.value.code is ErrorCode.INSUFFICIENT_BALANCE
    assert "costs 1 tokens" in exc.value.message


async def test_a_repeated_reserve_of_one_generation_holds_once(store: Store) -> None:
    """Routing's retried ReserveGeneration call (same generation id): one hold, the same answer.
    (Idempotency-Keys, which make one generation of many submits, are routing's: test_idempotency_store.)"""
    key = await funded_key(store, 10)
    g = generation(key, n=2)
    first = await store.ledger.reserve(g)
    racers = await asyncio.gather(*(store.ledger.reserve(g) for _ in range(6)))
    assert {(r.total.tokens, r.tariff.reserved.tokens) for r in [first, *racers]} == {(2, 2)}
    assert (await store.ledger.balance(key.account_id)).available_tokens == 10 - 2
    rows = await explain(store, key.account_id)
    assert [r.kind for r in rows] == ["credit", "reserve"]
    # a submit that was never dispatched gives its hold back, and says so in the ledger
    assert await store.ledger.release(g.id, ReleaseReason.RELEASE_REASON_NOT_DISPATCHED)
    assert (await store.ledger.entries(key.account_id))[-1].note == "not dispatched"
    assert (await store.ledger.balance(key.account_id)).available_tokens == 10


async def test_revoked_key_stops_at_once(store: Store) -> None:
    key, secret = await store.keys.create(plan="pro", name="ci")
    await store.ledger.credit(key.account_id, 10)
    assert (await store.keys.authenticate(secret)).api_key_id == key.id
    await store.keys.revoke(key.id)
    with pytest.raises(GatewayError) as exc:
        await store.keys.authenticate(secret)
    assert exc.value.code is ErrorCode.UNAUTHENTICATED
    with pytest.raises(GatewayError) as exc:
        await store.ledger.reserve(generation(key))
    assert exc.value.code is ErrorCode.UNAUTHENTICATED
    listed = {k.id: k for k in await store.keys.list(key.account_id)}
    assert listed[key.id].revoked_ms is not None


async def test_a_key_cannot_spend_another_accounts_balance(store: Store) -> None:
    mine = await funded_key(store, 10)
    other = await funded_key(store, 10)
    g = generation(mine)
    g.account_id = other.account_id
    with pytest.raises(GatewayError) as exc:
        await store.ledger.reserve(g)
    assert exc.value.code is ErrorCode.UNAUTHENTICATED


async def test_token_priced_capture_charges_the_usage(store: Store) -> None:
    key = await funded_key(store, 1000)
    g = generation(key, n=1, model="gpt-image-1", prompt="x" * 100)
    g.params.quality = "high"
    g.params.size = "1024x1024"
    r = await store.ledger.reserve(g)
    assert r.total.tokens == 17 + 1  # $0.167 of output, and the prompt rounds up to a token
    usage = gen.Usage(input_tokens=25, input_text_tokens=25, output_tokens=4160, total_tokens=4185)
    await store.ledger.settle(gen.Generation(id=g.id, state=gen.GENERATION_STATE_SUCCEEDED, images=[gen.ImageRef()], usage=usage))
    rows = await explain(store, key.account_id)
    capture = rows[-1]
    assert capture.charged_usd_micros == 166_400 + 125 and capture.charged_tokens == 17
    assert (await store.ledger.balance(key.account_id)).available_tokens == 1000 - 17


async def test_stale_reservations_expire(store: Store) -> None:
    key = await funded_key(store, 10)
    g = generation(key, n=3)
    await store.ledger.reserve(g)
    assert await store.ledger.expire(3_600_000) == 0
    store.clock.ms += 3_600_001
    assert await store.ledger.expire(3_600_000) == 1
    assert (await store.ledger.balance(key.account_id)).available_tokens == 10
    assert not await store.ledger.capture(g.id, 3)  # a late success after the expiry is not charged


async def test_credits_are_idempotent_by_reference(store: Store) -> None:
    balance, applied = await store.ledger.credit("acct_topup", 50, reference="invoice-7")
    assert applied and balance.available_tokens == 50
    balance, applied = await store.ledger.credit("acct_topup", 50, reference="invoice-7")
    assert not applied and balance.available_tokens == 50
    with pytest.raises(GatewayError):
        await store.ledger.credit("acct_topup", 0)


async def test_a_credit_reference_is_one_accounts_own(store: Store) -> None:
    """inv-17 used for acct_A does not make acct_B's inv-17 a duplicate."""
    _, applied_a = await store.ledger.credit("acct_A", 30, reference="inv-17")
    balance_b, applied_b = await store.ledger.credit("acct_B", 20, reference="inv-17")
    assert applied_a and applied_b and balance_b.available_tokens == 20
    again, applied = await store.ledger.credit("acct_B", 20, reference="inv-17")
    assert not applied and again.available_tokens == 20
    assert (await store.ledger.balance("acct_A")).available_tokens == 30


async def test_usage_per_day_model_and_key(store: Store) -> None:
    a = await funded_key(store, 1000)
    b, _ = await store.keys.create(plan="pro", name="second", account_id=a.account_id)
    day1 = store.clock.ms
    for key, model, n in [(a, "pixelmesh-sketch", 2), (a, "pixelmesh-sketch", 1), (b, "dall-e-2", 1)]:
        g = generation(key, n=n, model=model)
        await store.ledger.reserve(g)
        await store.ledger.capture(g.id, n)
    failed = generation(a)
    await store.ledger.reserve(failed)
    await store.ledger.release(failed.id, ReleaseReason.RELEASE_REASON_FAILED)
    store.clock.ms = day1 + DAY_MS
    g = generation(a)
    await store.ledger.reserve(g)
    await store.ledger.capture(g.id, 1)
    today = dt.datetime.fromtimestamp(store.clock.ms / 1000, dt.UTC).date()
    rows = await usage(store.databases[0], a.account_id, today - dt.timedelta(days=1), today)
    assert [(r.date, r.model, r.api_key_id, r.generations, r.images, r.tokens) for r in rows] == [
        ("2026-11-18", "dall-e-2", b.id, 1, 1, 2),
        ("2026-11-18", "pixelmesh-sketch", a.id, 2, 3, 3),
        ("2026-11-19", "pixelmesh-sketch", a.id, 1, 1, 1),
    ]
    assert sum(r.usd_micros for r in rows) == 18_000 + 4 * 10_000  # dall-e-2 512x512, four sketches


async def test_dev_keys_are_seeded_once_even_by_two_replicas(store: Store) -> None:
    spec = "pm-dev-a, pm-dev-b@acct_other"
    keys2, _, db = await open_store(store.url, store.clock)
    store.databases.append(db)
    seeded, _ = await asyncio.gather(store.keys.seed_dev_keys(spec, 1_000_000), keys2.seed_dev_keys(spec, 1_000_000))
    assert [p.account_id for p in seeded] == ["acct_dev", "acct_other"]
    await store.keys.seed_dev_keys(spec, 1_000_000)  # a restart
    p = await store.keys.authenticate("pm-dev-b")
    assert (p.account_id, p.plan, p.retention_class) == ("acct_other", "pro", "days-90")
    assert (await store.ledger.balance("acct_dev")).available_tokens == 1_000_000
    assert len(await store.ledger.entries("acct_dev")) == 1
    # no limits on development keys: every engineer's tests run at full speed
    key = (await store.keys.list("acct_dev"))[0]
    for _ in range(40):
        await store.ledger.reserve(generation(key))
