"""Balances and the ledger: reserve at submit, capture on success, release otherwise.

Every movement of a balance is one ledger row, unique by (reference, kind) where the
reference is the generation id (or a credit's reference), so a redelivered event can
never charge or refund twice; `balance_after` on each row lets anyone explain a balance
row by row. A reservation moves from `reserved` to `captured` or `released` exactly once
(a conditional UPDATE), which is how the first terminal state wins (bus.supersede).

Concurrency: a reservation locks its API key's row (SELECT ... FOR UPDATE on PostgreSQL),
so one key's limits are counted by one transaction at a time across replicas, and takes
the tokens with `UPDATE accounts SET balance = balance - q WHERE balance >= q`, which can
never overspend. SQLite has a single writer (one pooled connection), so the same code is
serialised there.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from prometheus_client import Counter

from pixelmesh.common.v1 import generation_pb2 as gen
from pricing import limits
from pricing.db import accounts, api_keys, ledger_entries, reservations
from pricing.keys import Clock, ensure_account, now_ms
from pricing.plans import Plans
from pricing.prices import PriceTable, Quote
from svckit.errors import ErrorCode, GatewayError, invalid
from svckit.logging import get_logger
from svckit.tariffs import final_cost

log = get_logger(__name__)


# Ledger totals (the rows are the truth; these let a dashboard follow the flow of money).
LEDGER_ENTRIES = Counter("pixelmesh_ledger_entries_total", "Ledger rows written", ["kind"])
LEDGER_TOKENS = Counter("pixelmesh_ledger_tokens_total", "Tokens moved by ledger rows (absolute)", ["kind"])


@dataclass(frozen=True)
class Reservation:
    """The outcome of reserve(): a new hold (quote), or the generation an idempotency key already made."""

    total: gen.Cost
    per_image: gen.Cost
    tariff: gen.Tariff
    existing: gen.Generation | None = None


@dataclass(frozen=True)
class Balance:
    account_id: str
    available_tokens: int
    reserved_tokens: int


class Ledger:
    def __init__(self, engine: AsyncEngine, prices: PriceTable, plans: Plans, clock: Clock = now_ms) -> None:
        self._engine = engine
        self._prices = prices
        self._plans = plans
        self._clock = clock

    # ---- submit ------------------------------------------------------------------------
    async def reserve(self, generation: gen.Generation) -> Reservation:
        """Quote the generation, check the key's limits and the balance, hold the quote."""
        p = generation.params
        n = p.n or 1
        if not generation.id:
            raise invalid("The generation has no id.", "generation.id")
        quote = self._prices.quote(
            generation.model or p.model, p.size, p.quality or generation.quality, n,
            prompt_bytes=len(p.prompt.encode()), input_images=len(p.input_images),
        )
        try:
            return await self._reserve(generation, quote, n)
        except IntegrityError:
            # Lost a race on the same idempotency key (or the same generation id): the
            # winner's reservation stands; return it.
            existing = await self._existing(generation)
            if existing is None:
                raise
            return existing

    async def _reserve(self, generation: gen.Generation, quote: Quote, n: int) -> Reservation:
        now = self._clock()
        async with self._engine.begin() as conn:
            key = (
                await conn.execute(select(api_keys).where(api_keys.c.id == generation.api_key_id).with_for_update())
            ).first()
            if key is None or key.revoked_ms is not None or key.account_id != generation.account_id:
                raise GatewayError(ErrorCode.UNAUTHENTICATED, "Incorrect API key provided.")
            if (found := await self._find(conn, generation)) is not None:
                return found
            balance = (
                await conn.execute(select(accounts.c.balance_tokens).where(accounts.c.id == generation.account_id))
            ).scalar_one_or_none() or 0
            if balance < quote.total_tokens:
                raise self._insufficient(quote, balance)
            await limits.check(conn, key.id, self._plans.limits(key.plan, key.limits), n, now)
            after = (
                await conn.execute(
                    update(accounts)
                    .where(accounts.c.id == generation.account_id, accounts.c.balance_tokens >= quote.total_tokens)
                    .values(balance_tokens=accounts.c.balance_tokens - quote.total_tokens)
                    .returning(accounts.c.balance_tokens)
                )
            ).scalar_one_or_none()
            if after is None:  # spent by another request since we read it
                raise self._insufficient(quote, balance)
            idem = generation.idempotency_key or None
            snapshot = None
            if idem:  # kept as routing dispatches it, so a retry gets the very same generation back
                queued = gen.Generation()
                queued.CopyFrom(generation)
                queued.cost.CopyFrom(quote.total)
                queued.tariff.CopyFrom(quote.tariff)
                snapshot = queued.SerializeToString()
            await conn.execute(
                insert(reservations).values(
                    generation_id=generation.id, account_id=generation.account_id, api_key_id=key.id,
                    model=generation.model or generation.params.model, size=generation.params.size,
                    quality=generation.params.quality or generation.quality, n=n,
                    reserved_tokens=quote.total_tokens, reserved_usd_micros=quote.total.usd_micros,
                    tariff=quote.tariff.SerializeToString(), status="reserved", idempotency_key=idem,
                    snapshot=snapshot, created_ms=now, settled_ms=None,
                    images=0, charged_tokens=0, charged_usd_micros=0,
                )
            )
            await self._entry(
                conn, generation.account_id, "reserve", generation.id, -quote.total_tokens, after, now,
                api_key_id=key.id, model=generation.model, images=n,
            )
        return Reservation(quote.total, quote.per_image, quote.tariff)

    def _insufficient(self, quote: Quote, balance: int) -> GatewayError:
        return GatewayError(
            ErrorCode.INSUFFICIENT_BALANCE,
            f"Insufficient balance: this request costs {quote.total_tokens} tokens and the account has "
            f"{max(0, balance)} available. Top up the balance or lower n, size or quality.",
        )

    async def _find(self, conn: AsyncConnection, generation: gen.Generation) -> Reservation | None:
        """An earlier reservation of the same generation id or idempotency key."""
        row = (await conn.execute(select(reservations).where(reservations.c.generation_id == generation.id))).first()
        if row is None and generation.idempotency_key:
            row = (
                await conn.execute(
                    select(reservations).where(
                        reservations.c.account_id == generation.account_id,
                        reservations.c.idempotency_key == generation.idempotency_key,
                    )
                )
            ).first()
        if row is None:
            return None
        tariff = gen.Tariff.FromString(row.tariff)
        total = gen.Cost(tokens=row.reserved_tokens, usd_micros=row.reserved_usd_micros)
        if row.generation_id == generation.id:
            return Reservation(total, tariff.per_image, tariff)  # the same call, repeated
        existing = gen.Generation.FromString(row.snapshot) if row.snapshot else gen.Generation(id=row.generation_id)
        return Reservation(total, tariff.per_image, tariff, existing=existing)

    async def _existing(self, generation: gen.Generation) -> Reservation | None:
        async with self._engine.connect() as conn:
            return await self._find(conn, generation)

    # ---- settlement --------------------------------------------------------------------
    async def capture(self, generation_id: str, images: int, usage: gen.Usage | None = None) -> bool:
        """Charge what was produced (never more than reserved) and return the rest. Once."""
        now = self._clock()
        async with self._engine.begin() as conn:
            row = await self._open(conn, generation_id)
            if row is None:
                return False
            cost = final_cost(gen.Tariff.FromString(row.tariff), images, usage)
            charged = min(cost.tokens, row.reserved_tokens)
            if not await self._settle(conn, generation_id, "captured", now, images=images, tokens=charged, usd=cost.usd_micros):
                return False
            refund = row.reserved_tokens - charged
            after = await self._add(conn, row.account_id, refund)
            await self._entry(
                conn, row.account_id, "capture", generation_id, refund, after, now, api_key_id=row.api_key_id,
                model=row.model, images=images, charged=gen.Cost(tokens=charged, usd_micros=cost.usd_micros),
            )
        log.info("captured", generation_id=generation_id, tokens=charged, images=images, returned=refund)
        return True

    async def release(self, generation_id: str, reason: str = "") -> bool:
        """Give the whole reservation back (failed, cancelled, expired, never dispatched). Once."""
        now = self._clock()
        async with self._engine.begin() as conn:
            row = await self._open(conn, generation_id)
            if row is None or not await self._settle(conn, generation_id, "released", now):
                return False
            if reason == "not dispatched":  # the client may retry with the same idempotency key
                await conn.execute(
                    update(reservations).where(reservations.c.generation_id == generation_id).values(idempotency_key=None)
                )
            after = await self._add(conn, row.account_id, row.reserved_tokens)
            await self._entry(
                conn, row.account_id, "release", generation_id, row.reserved_tokens, after, now,
                api_key_id=row.api_key_id, model=row.model, images=0, note=reason[:500],
            )
        log.info("released", generation_id=generation_id, tokens=row.reserved_tokens, reason=reason)
        return True

    async def settle(self, generation: gen.Generation) -> bool:
        """Apply a terminal state: SUCCEEDED captures, FAILED and CANCELLED release."""
        if generation.state == gen.GENERATION_STATE_SUCCEEDED:
            return await self.capture(generation.id, len(generation.images), generation.usage)
        if generation.state == gen.GENERATION_STATE_FAILED:
            return await self.release(generation.id, f"failed: {generation.error.code or 'error'}")
        if generation.state == gen.GENERATION_STATE_CANCELLED:
            return await self.release(generation.id, "cancelled")
        return False

    async def expire(self, older_than_ms: int) -> int:
        """Release reservations still open after the TTL (a generation that never ended)."""
        cutoff = self._clock() - older_than_ms
        async with self._engine.connect() as conn:
            stale = (
                await conn.execute(
                    select(reservations.c.generation_id).where(
                        reservations.c.status == "reserved", reservations.c.created_ms < cutoff
                    )
                )
            ).scalars().all()
        return sum([await self.release(gid, "expired") for gid in stale])

    async def _open(self, conn: AsyncConnection, generation_id: str):  # noqa: ANN202
        row = (
            await conn.execute(
                select(reservations).where(reservations.c.generation_id == generation_id).with_for_update()
            )
        ).first()
        return row if row is not None and row.status == "reserved" else None

    async def _settle(
        self, conn: AsyncConnection, generation_id: str, status: str, now: int, *, images: int = 0, tokens: int = 0, usd: int = 0
    ) -> bool:
        result = await conn.execute(
            update(reservations)
            .where(reservations.c.generation_id == generation_id, reservations.c.status == "reserved")
            .values(status=status, settled_ms=now, images=images, charged_tokens=tokens, charged_usd_micros=usd)
        )
        return result.rowcount == 1

    # ---- balances ----------------------------------------------------------------------
    async def credit(self, account_id: str, tokens: int, reference: str = "", note: str = "") -> tuple[Balance, bool]:
        """Add tokens; a repeated reference is applied once. Opens the account if needed."""
        if tokens <= 0:
            raise invalid("A credit must be a positive number of tokens.", "tokens")
        if not account_id:
            raise invalid("Name the account to credit.", "account_id")
        reference = reference or "credit_" + secrets.token_hex(8)
        now = self._clock()
        applied = True
        try:
            async with self._engine.begin() as conn:
                await ensure_account(conn, account_id, now)
                after = await self._add(conn, account_id, tokens)
                await self._entry(conn, account_id, "credit", reference, tokens, after, now, note=note[:500])
        except IntegrityError:
            applied = False  # this reference was credited before
        return await self.balance(account_id), applied

    async def balance(self, account_id: str) -> Balance:
        async with self._engine.connect() as conn:
            available = (
                await conn.execute(select(accounts.c.balance_tokens).where(accounts.c.id == account_id))
            ).scalar_one_or_none()
            if available is None:
                raise GatewayError(ErrorCode.NOT_FOUND, f"No account with id '{account_id}'.", param="account_id")
            held = (
                await conn.execute(
                    select(reservations.c.reserved_tokens).where(
                        reservations.c.account_id == account_id, reservations.c.status == "reserved"
                    )
                )
            ).scalars().all()
        return Balance(account_id, available, sum(held))

    async def entries(self, account_id: str, after_id: int = 0, limit: int = 500) -> list:
        async with self._engine.connect() as conn:
            return list(
                await conn.execute(
                    select(ledger_entries)
                    .where(ledger_entries.c.account_id == account_id, ledger_entries.c.id > after_id)
                    .order_by(ledger_entries.c.id)
                    .limit(max(1, min(limit, 5000)))
                )
            )

    async def _add(self, conn: AsyncConnection, account_id: str, tokens: int) -> int:
        return (
            await conn.execute(
                update(accounts)
                .where(accounts.c.id == account_id)
                .values(balance_tokens=accounts.c.balance_tokens + tokens)
                .returning(accounts.c.balance_tokens)
            )
        ).scalar_one()

    async def _entry(
        self, conn: AsyncConnection, account_id: str, kind: str, reference: str, amount: int, after: int, now: int,
        *, api_key_id: str = "", model: str = "", images: int = 0, charged: gen.Cost | None = None, note: str = "",
    ) -> None:
        charged = charged or gen.Cost()
        await conn.execute(
            insert(ledger_entries).values(
                account_id=account_id, kind=kind, reference=reference, amount_tokens=amount, balance_after=after,
                charged_tokens=charged.tokens, charged_usd_micros=charged.usd_micros, api_key_id=api_key_id,
                model=model, images=images, note=note, created_ms=now,
            )
        )
        LEDGER_TOKENS.labels(kind).inc(abs(amount))
        LEDGER_ENTRIES.labels(kind).inc()
