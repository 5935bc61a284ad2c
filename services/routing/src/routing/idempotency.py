"""Idempotency keys: a retried submit gets the generation its key already made.

Routing's own store (SQLite by default, PostgreSQL when routing runs as several replicas),
one row per (account, key):

1. `claim` before anything is reserved: the first call inserts the row (its generation id,
   no generation yet) and goes on; a later call with the same key gets the generation the
   row records, or waits while the first call is still being admitted.
2. `record` once pricing holds the cost: the generation as it is dispatched, so a retry gets
   the very same one back (its id, state and cost as queued).
3. `forget` when the call ends without dispatching (refused, or the queue is down): the key
   is free again and the client may retry with it.

A key is kept for `ttl_seconds` (a day by default, as Stripe does); after that the same key
makes a new generation. An admission that died between claim and record (routing killed)
leaves a row without a generation: after `ABANDONED_MS` another call takes the key over.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from pixelmesh.common.v1 import generation_pb2 as gen
from sqlstore import Clock, Database, Schema, now_ms
from svckit.errors import ErrorCode, GatewayError
from svckit.logging import get_logger

log = get_logger(__name__)

SCHEMA = Schema(
    script_location=Path(__file__).with_name("migrations"),
    version_table="routing_alembic_version",
    url_variable="ROUTING_DATABASE_URL",
    default_url="sqlite+aiosqlite:///.run/routing.db",
)
# A claim without a generation older than this belongs to an admission that died.
ABANDONED_MS = 60_000
# How long a retry waits for the first call with its key to be admitted before a 409.
IN_FLIGHT_WAIT_SECONDS = 15.0
_POLL_SECONDS = 0.05

metadata = MetaData()
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("generation_id", String(64), nullable=False),
    # pixelmesh.common.v1.Generation as dispatched; NULL while its admission is in flight.
    Column("generation", LargeBinary, nullable=True),
    Column("created_ms", BigInteger, nullable=False, index=True),
)
c = idempotency_keys.c
# The row of one key, built once (bound per call).
_ROW = select(c.generation_id, c.generation, c.created_ms).where(
    c.account_id == bindparam("account"), c.key == bindparam("key")
)


class IdempotencyStore:
    def __init__(self, database: Database, ttl_seconds: float, clock: Clock = now_ms) -> None:
        self._db = database
        self._ttl_ms = int(ttl_seconds * 1000)
        self._clock = clock

    @property
    def database(self) -> Database:
        return self._db

    async def claim(self, generation: gen.Generation, key: str) -> gen.Generation | None:
        """None when this call owns `key` now; else the generation the key already made."""
        deadline = time.monotonic() + IN_FLIGHT_WAIT_SECONDS
        while True:
            earlier = await self._db.run(partial(self._claim_tx, generation.account_id, key, generation.id))
            if earlier is None:
                return None
            if earlier.generation is not None:
                return gen.Generation.FromString(earlier.generation)
            if time.monotonic() >= deadline:
                raise GatewayError(
                    ErrorCode.CONFLICT,
                    "A request with this Idempotency-Key is still being admitted; retry it in a moment.",
                    param="Idempotency-Key",
                )
            await asyncio.sleep(_POLL_SECONDS)

    def _claim_tx(self, account_id: str, key: str, generation_id: str, conn: Connection):  # noqa: ANN202
        now = self._clock()
        row = conn.execute(_ROW, {"account": account_id, "key": key}).first()
        if row is None:
            try:
                with conn.begin_nested():
                    conn.execute(
                        idempotency_keys.insert().values(
                            account_id=account_id, key=key, generation_id=generation_id, generation=None, created_ms=now
                        )
                    )
                return None
            except IntegrityError:  # a racing call inserted it first: its row answers
                return conn.execute(_ROW, {"account": account_id, "key": key}).first()
        expired = row.created_ms < now - self._ttl_ms
        abandoned = row.generation is None and row.created_ms < now - ABANDONED_MS
        if not (expired or abandoned):
            return row
        taken = conn.execute(
            update(idempotency_keys)
            .where(c.account_id == account_id, c.key == key, c.generation_id == row.generation_id)
            .values(generation_id=generation_id, generation=None, created_ms=now)
        )
        return None if taken.rowcount == 1 else row

    async def record(self, generation: gen.Generation, key: str) -> None:
        """The generation as dispatched: what a retry with its key gets back."""
        data = generation.SerializeToString()
        await self._db.run(
            lambda conn: conn.execute(
                update(idempotency_keys).where(*self._mine(generation, key)).values(generation=data)
            )
        )

    async def forget(self, generation: gen.Generation, key: str) -> None:
        """The call ended without dispatching: the key is free for a retry. Best effort: if
        the store is away too, the claim is taken over once it counts as abandoned."""
        try:
            await self._db.run(lambda conn: conn.execute(delete(idempotency_keys).where(*self._mine(generation, key))))
        except Exception as exc:
            log.error("could not free an idempotency key", generation_id=generation.id, error=repr(exc))

    async def prune(self) -> int:
        """Delete keys past their TTL; returns how many."""
        cutoff = self._clock() - self._ttl_ms
        return await self._db.run(
            lambda conn: conn.execute(delete(idempotency_keys).where(c.created_ms < cutoff)).rowcount
        )

    @staticmethod
    def _mine(generation: gen.Generation, key: str) -> tuple:
        return (
            c.account_id == generation.account_id,
            c.key == key,
            c.generation_id == generation.id,
        )
