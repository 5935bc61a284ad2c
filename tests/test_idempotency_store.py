"""Routing's idempotency store, on SQLite and on a real PostgreSQL (deploy/local/postgres.sh).

The store alone (no gRPC, no Kafka): a key makes one generation, racing retries agree on
it, a call that was never dispatched frees its key, and a key lasts its TTL. The whole
path (routing, pricing, the edge) is in test_idempotency.py and test_ledger_mesh.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import NamedTuple
from pathlib import Path

import pytest
from sqlalchemy import inspect

from pixelmesh.common.v1 import generation_pb2 as gen
from routing.idempotency import ABANDONED_MS, SCHEMA, IdempotencyStore, metadata
from sqlstore import open_database
from svckit.errors import ErrorCode, GatewayError
from svckit.ids import new_generation_id

TTL_SECONDS = 3600


class Clock:
    def __init__(self) -> None:
        self.ms = 1_780_000_000_000

    def __call__(self) -> int:
        return self.ms


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'routing.db'}"
    return await request.getfixturevalue("postgres").new_database()


@pytest.fixture
async def keys(database_url: str) -> AsyncIterator[IdempotencyStore]:
    db = open_database(database_url)
    await SCHEMA.migrate(db)
    store = IdempotencyStore(db, TTL_SECONDS, clock=Clock())
    yield store
    await db.close()


class Submit(NamedTuple):
    """A submit as routing admits it: the generation and the client's Idempotency-Key."""

    generation: gen.Generation
    key: str


def submit(key: str, n: int = 1, account: str = "acct_a") -> Submit:
    generation = gen.Generation(
        id=new_generation_id(),
        account_id=account,
        params=gen.GenerationParams(model="pixelmesh-sketch", prompt="once", n=n),
        cost=gen.Cost(tokens=n),
    )
    return Submit(generation, key)


async def admitted(keys: IdempotencyStore, call: Submit) -> gen.Generation | None:
    """What routing does with a submit: claim its key, and record it when it is dispatched."""
    earlier = await keys.claim(*call)
    if earlier is None:
        await keys.record(*call)
    return earlier


async def test_migrations_build_the_schema_the_code_uses(keys: IdempotencyStore) -> None:
    db = keys.database
    tables = await db.run(lambda c: {t: {col["name"] for col in inspect(c).get_columns(t)} for t in inspect(c).get_table_names()})
    for table in metadata.sorted_tables:
        assert tables.get(table.name) == {c.name for c in table.columns}, table.name
    assert "routing_alembic_version" in tables  # its own version table: it may share pricing's database
    await SCHEMA.migrate(db)  # a second start finds the schema at head


async def test_an_idempotency_key_makes_one_generation(keys: IdempotencyStore) -> None:
    first = submit("retry-me", n=2)
    assert await admitted(keys, first) is None
    again = await admitted(keys, submit("retry-me", n=2))
    assert again is not None and again.id == first.generation.id and again.params.n == 2 and again.cost.tokens == 2
    # racing retries: one of them owns the key, the others get its generation
    racers = [submit("race") for _ in range(6)]
    results = await asyncio.gather(*(admitted(keys, g) for g in racers))
    assert sum(r is None for r in results) == 1
    winner = next(g for g, r in zip(racers, results, strict=True) if r is None)
    assert {r.id for r in results if r is not None} == {winner.generation.id}
    # keys are per account
    assert await admitted(keys, submit("retry-me", account="acct_b")) is None


async def test_a_submit_never_dispatched_frees_its_key(keys: IdempotencyStore) -> None:
    refused = submit("retry-me")
    assert await keys.claim(*refused) is None
    await keys.forget(*refused)
    retry = submit("retry-me")
    assert await admitted(keys, retry) is None
    assert (await admitted(keys, submit("retry-me"))).id == retry.generation.id


async def test_a_retry_waits_for_the_first_call_then_gets_its_generation(keys: IdempotencyStore) -> None:
    first = submit("slow")
    assert await keys.claim(*first) is None  # admitted, not yet recorded (pricing is reserving)
    retry = asyncio.create_task(keys.claim(*submit("slow")))
    await asyncio.sleep(0.2)
    assert not retry.done()
    await keys.record(*first)
    assert (await asyncio.wait_for(retry, 5)).id == first.generation.id


async def test_a_key_lasts_its_ttl_and_an_abandoned_claim_is_taken_over(keys: IdempotencyStore) -> None:
    clock = keys._clock
    old = submit("daily")
    await admitted(keys, old)
    clock.ms += TTL_SECONDS * 1000 + 1
    fresh = submit("daily")
    assert await admitted(keys, fresh) is None  # past its TTL the key makes a new generation
    assert (await admitted(keys, submit("daily"))).id == fresh.generation.id
    # routing died between claim and record: after ABANDONED_MS another call takes the key
    dead = submit("orphan")
    assert await keys.claim(*dead) is None
    clock.ms += ABANDONED_MS + 1
    assert await admitted(keys, submit("orphan")) is None
    # pruning deletes what is past the TTL, and only that
    clock.ms += TTL_SECONDS * 1000 + 1
    await admitted(keys, submit("kept"))
    assert await keys.prune() == 2


async def test_a_retry_of_a_call_stuck_in_admission_is_a_conflict(keys: IdempotencyStore, monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setattr("routing.idempotency.IN_FLIGHT_WAIT_SECONDS", 0.3)
    assert await keys.claim(*submit("stuck")) is None
    with pytest.raises(GatewayError) as exc:
        await keys.claim(*submit("stuck"))
    assert exc.value.code is ErrorCode.CONFLICT and exc.value.param == "Idempotency-Key"
