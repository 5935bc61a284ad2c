"""Balances and the ledger: reserve at submit, capture on success, release otherwise.

Every movement of a balance is one ledger row, unique by (account, reference, kind) where
the reference is the generation id (or the account's credit reference), so a redelivered
event can never charge or refund twice; `balance_after` on each row lets anyone explain a balance
row by row. A reservation moves from `reserved` to `captured` or `released` exactly once
(a conditional UPDATE), which is how the first terminal state wins (lifecycle.supersede).

Concurrency: a reservation locks its API key's row (SELECT ... FOR UPDATE on PostgreSQL),
so one key's limits are counted by one transaction at a time across replicas, and takes
the tokens with `UPDATE accounts SET balance = balance - q WHERE balance >= q`, which can
never overspend. SQLite has a single writer, so the same code is serialised there.

Each operation is written once, as a synchronous function of a Connection
(`_reserve_tx`, `_capture_tx`, ...), with statements built once at import; the async
methods prepare what needs no database (quotes, serialised protobufs), hand the
operation to sqlstore (group commits on SQLite), and count and log after the
commit. A refused operation (insufficient balance, a limit, a duplicate) leaves nothing
behind: it runs in a savepoint (SQLite's group) or a transaction of its own (PostgreSQL).
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from functools import partial

from prometheus_client import Counter
from sqlalchemy import Connection, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.pricing.v1.pricing_service_pb2 import ReleaseReason
from pricing import limits
from pricing.db import accounts, api_keys, ledger_entries, reservations
from pricing.keys import WRONG_KEY, ensure_account
from pricing.plans import Plans
from pricing.prices import PriceTable, Quote
from sqlstore import Clock, Database, now_ms
from svckit.errors import ErrorCode, GatewayError, invalid
from svckit.logging import get_logger
from svckit.tariffs import final_cost

log = get_logger(__name__)


# Ledger totals (the rows are the truth; these let a dashboard follow the flow of money).
LEDGER_ENTRIES = Counter("pixelmesh_ledger_entries_total", "Ledger rows written", ["kind"])
LEDGER_TOKENS = Counter("pixelmesh_ledger_tokens_total", "Tokens moved by ledger rows (absolute)", ["kind"])
_COUNTED = {
    kind: (LEDGER_ENTRIES.labels(kind), LEDGER_TOKENS.labels(kind))
    for kind in ("credit", "reserve", "capture", "release")
}
# Released for good (expired) at most this many at once.
EXPIRE_BATCH = 256

# Statements, built once (SQLAlchemy's compiled cache then hits on every call) and bound
# per call. Bind names differ from the columns they set (SQLAlchemy reserves those).
r, a = reservations.c, accounts.c
_KEY = (
    select(api_keys.c.id, api_keys.c.account_id, api_keys.c.plan, api_keys.c.limits, api_keys.c.revoked_ms)
    .where(api_keys.c.id == bindparam("key_id"))
    .with_for_update()
)
_BALANCE = select(a.balance_tokens).where(a.id == bindparam("account"))
_TAKE = (
    update(accounts)
    .where(a.id == bindparam("account"), a.balance_tokens >= bindparam("tokens"))
    .values(balance_tokens=a.balance_tokens - bindparam("tokens"))
    .returning(a.balance_tokens)
)
_ADD = (
    update(accounts)
    .where(a.id == bindparam("account"))
    .values(balance_tokens=a.balance_tokens + bindparam("tokens"))
    .returning(a.balance_tokens)
)
_INSERT_RESERVATION = insert(reservations)
_INSERT_ENTRY = insert(ledger_entries)
_BY_ID = select(reservations).where(r.generation_id == bindparam("gid"))
_OPEN = (
    select(r.account_id, r.api_key_id, r.model, r.tariff, r.reserved_tokens, r.status)
    .where(r.generation_id == bindparam("gid"))
    .with_for_update()
)
_CAPTURE = (
    update(reservations)
    .where(r.generation_id == bindparam("gid"), r.status == "reserved")
    .values(
        status="captured",
        settled_ms=bindparam("now"),
        images=bindparam("produced"),
        charged_tokens=bindparam("tokens"),
        charged_usd_micros=bindparam("usd"),
    )
)
# A release needs nothing of the row before it: one conditional UPDATE decides and returns it.
_RELEASE = (
    update(reservations)
    .where(r.generation_id == bindparam("gid"), r.status == "reserved")
    .values(status="released", settled_ms=bindparam("now"))
    .returning(r.account_id, r.api_key_id, r.model, r.reserved_tokens)
)
_HELD = select(func.coalesce(func.sum(r.reserved_tokens), 0)).where(
    r.account_id == bindparam("account"), r.status == "reserved"
)
_STALE = select(r.generation_id).where(r.status == "reserved", r.created_ms < bindparam("cutoff"))
del r, a


@dataclass(frozen=True)
class Reservation:
    """The outcome of reserve(): the hold of the generation's quote (new, or made by an earlier call)."""

    total: gen.Cost
    per_image: gen.Cost
    tariff: gen.Tariff


@dataclass(frozen=True)
class Balance:
    account_id: str
    available_tokens: int
    reserved_tokens: int


@dataclass(frozen=True)
class _Settled:
    tokens: int  # charged (capture) or given back (release)
    returned: int


def _entry(
    account_id: str,
    kind: str,
    reference: str,
    amount: int,
    after: int,
    now: int,
    *,
    api_key_id: str = "",
    model: str = "",
    images: int = 0,
    charged_tokens: int = 0,
    charged_usd_micros: int = 0,
    note: str = "",
) -> dict:
    return {
        "account_id": account_id,
        "kind": kind,
        "reference": reference,
        "amount_tokens": amount,
        "balance_after": after,
        "charged_tokens": charged_tokens,
        "charged_usd_micros": charged_usd_micros,
        "api_key_id": api_key_id,
        "model": model,
        "images": images,
        "note": note,
        "created_ms": now,
    }


def _count(kind: str, amount: int) -> None:
    entries, tokens = _COUNTED[kind]
    entries.inc()
    tokens.inc(abs(amount))


class Ledger:
    def __init__(self, database: Database, prices: PriceTable, plans: Plans, clock: Clock = now_ms) -> None:
        self._db = database
        self._prices = prices
        self._plans = plans
        self._clock = clock

    @property
    def database(self) -> Database:
        return self._db

    # ---- submit ------------------------------------------------------------------------
    async def reserve(self, generation: gen.Generation) -> Reservation:
        """Quote the generation, check the key's limits and the balance, hold the quote."""
        p = generation.params
        n = p.n or 1
        if not generation.id:
            raise invalid("The generation has no id.", "generation.id")
        quote = self._prices.quote(
            generation.model or p.model,
            p.size,
            p.quality or generation.quality,
            n,
            prompt_bytes=len(p.prompt.encode()),
            # The v2 API's image_url is an input image too (priced so by megapixel models).
            input_images=len(p.input_images) or int(bool(p.image_url)),
        )
        now = self._clock()
        row = {
            "generation_id": generation.id,
            "account_id": generation.account_id,
            "api_key_id": generation.api_key_id,
            "model": generation.model or p.model,
            "size": p.size,
            "quality": p.quality or generation.quality,
            "n": n,
            "reserved_tokens": quote.total_tokens,
            "reserved_usd_micros": quote.total.usd_micros,
            "tariff": quote.tariff.SerializeToString(),
            "status": "reserved",
            "created_ms": now,
            "settled_ms": None,
            "images": 0,
            "charged_tokens": 0,
            "charged_usd_micros": 0,
        }
        entry = _entry(
            generation.account_id,
            "reserve",
            generation.id,
            -quote.total_tokens,
            0,
            now,
            api_key_id=generation.api_key_id,
            model=generation.model,
            images=n,
        )
        try:
            await self._db.run(partial(self._reserve_tx, generation, quote, n, now, row, entry))
        except IntegrityError:
            # The same generation id was reserved before (or just now, by a racing retry of
            # the call): that reservation stands; return it.
            if (existing := await self._earlier(generation)) is None:
                raise
            return existing
        except GatewayError as err:
            # A repeated call is answered with what it reserved, whatever the balance and
            # limits are now; a wrong or revoked key is refused before anything else.
            if err.code is ErrorCode.UNAUTHENTICATED or (existing := await self._earlier(generation)) is None:
                raise
            return existing
        _count("reserve", quote.total_tokens)
        return Reservation(quote.total, quote.per_image, quote.tariff)

    def _reserve_tx(
        self, generation: gen.Generation, quote: Quote, n: int, now: int, row: dict, entry: dict, conn: Connection
    ) -> None:
        key = conn.execute(_KEY, {"key_id": generation.api_key_id}).first()
        if key is None or key.revoked_ms is not None or key.account_id != generation.account_id:
            raise GatewayError(ErrorCode.UNAUTHENTICATED, WRONG_KEY)
        account = generation.account_id
        try:
            limits.check(conn, key.id, self._plans.limits(key.plan, key.limits), n, now)
        except GatewayError:
            balance = self._available(conn, account)
            if balance < quote.total_tokens:  # too little balance is told before a limit
                raise self._insufficient(quote, balance) from None
            raise
        after = conn.execute(_TAKE, {"account": account, "tokens": quote.total_tokens}).scalar_one_or_none()
        if after is None:
            raise self._insufficient(quote, self._available(conn, account))
        conn.execute(_INSERT_RESERVATION, row)
        entry["balance_after"] = after
        conn.execute(_INSERT_ENTRY, entry)

    @staticmethod
    def _available(conn: Connection, account_id: str) -> int:
        return conn.execute(_BALANCE, {"account": account_id}).scalar_one_or_none() or 0

    def _insufficient(self, quote: Quote, balance: int) -> GatewayError:
        return GatewayError(
            ErrorCode.INSUFFICIENT_BALANCE,
            f"Insufficient balance: this request costs {quote.total_tokens} tokens and the account has "
            f"{max(0, balance)} available. Top up the balance or lower n, size or quality.",
        )

    async def _earlier(self, generation: gen.Generation) -> Reservation | None:
        return await self._db.run(partial(_find_tx, generation), write=False)

    # ---- settlement --------------------------------------------------------------------
    async def capture(self, generation_id: str, images: int, usage: gen.Usage | None = None) -> bool:
        """Charge what was produced (never more than reserved) and return the rest. Once."""
        settled = await self._db.run(partial(_capture_tx, generation_id, images, usage, self._clock()))
        if settled is None:
            return False
        _count("capture", settled.returned)
        log.info(
            "captured", generation_id=generation_id, tokens=settled.tokens, images=images, returned=settled.returned
        )
        return True

    async def release(self, generation_id: str, reason: ReleaseReason.ValueType, detail: str = "") -> bool:
        """Give the whole reservation back (failed, cancelled, expired, never dispatched). Once.
        The release row's note is the reason (and its detail: a failure's error code)."""
        note = release_note(reason, detail)
        settled = await self._db.run(partial(_release_tx, generation_id, note, self._clock()))
        if settled is None:
            return False
        _count("release", settled.returned)
        log.info("released", generation_id=generation_id, tokens=settled.returned, reason=note)
        return True

    async def settle(self, generation: gen.Generation) -> bool:
        """Apply a terminal state: SUCCEEDED captures, FAILED and CANCELLED release."""
        if generation.state == gen.GENERATION_STATE_SUCCEEDED:
            return await self.capture(generation.id, len(generation.images), generation.usage)
        if generation.state == gen.GENERATION_STATE_FAILED:
            return await self.release(generation.id, ReleaseReason.RELEASE_REASON_FAILED, generation.error.code)
        if generation.state == gen.GENERATION_STATE_CANCELLED:
            return await self.release(generation.id, ReleaseReason.RELEASE_REASON_CANCELLED)
        return False

    async def expire(self, older_than_ms: int) -> int:
        """Release reservations still open after the TTL (a generation that never ended)."""
        cutoff = self._clock() - older_than_ms
        stale = await self._db.run(lambda conn: conn.execute(_STALE, {"cutoff": cutoff}).scalars().all(), write=False)
        released = 0
        for i in range(0, len(stale), EXPIRE_BATCH):  # concurrent, so they commit in groups
            released += sum(
                await asyncio.gather(
                    *(self.release(gid, ReleaseReason.RELEASE_REASON_EXPIRED) for gid in stale[i : i + EXPIRE_BATCH])
                )
            )
        return released

    # ---- balances ----------------------------------------------------------------------
    async def credit(self, account_id: str, tokens: int, reference: str = "", note: str = "") -> tuple[Balance, bool]:
        """Add tokens; a repeated reference is applied once. Opens the account if needed."""
        if tokens <= 0:
            raise invalid("A credit must be a positive number of tokens.", "tokens")
        if not account_id:
            raise invalid("Name the account to credit.", "account_id")
        reference = reference or "credit_" + secrets.token_hex(8)
        now = self._clock()

        def credit_tx(conn: Connection) -> None:
            ensure_account(conn, account_id, now)
            after = conn.execute(_ADD, {"account": account_id, "tokens": tokens}).scalar_one()
            conn.execute(_INSERT_ENTRY, _entry(account_id, "credit", reference, tokens, after, now, note=note[:500]))

        applied = True
        try:
            await self._db.run(credit_tx)
            _count("credit", tokens)
        except IntegrityError:
            applied = False  # this reference was credited before
        return await self.balance(account_id), applied

    async def balance(self, account_id: str) -> Balance:
        def balance_tx(conn: Connection) -> tuple[int | None, int]:
            available = conn.execute(_BALANCE, {"account": account_id}).scalar_one_or_none()
            return available, conn.execute(_HELD, {"account": account_id}).scalar_one()

        available, held = await self._db.run(balance_tx, write=False)
        if available is None:
            raise GatewayError(ErrorCode.NOT_FOUND, f"No account with id '{account_id}'.", param="account_id")
        return Balance(account_id, available, int(held))

    async def entries(self, account_id: str, after_id: int = 0, limit: int = 500) -> list:
        query = (
            select(ledger_entries)
            .where(ledger_entries.c.account_id == account_id, ledger_entries.c.id > after_id)
            .order_by(ledger_entries.c.id)
            .limit(max(1, min(limit, 5000)))
        )
        return await self._db.run(lambda conn: list(conn.execute(query)), write=False)


def release_note(reason: ReleaseReason.ValueType, detail: str = "") -> str:
    """What a release row's note says: "not dispatched", "failed: provider_error", "expired"..."""
    if reason == ReleaseReason.RELEASE_REASON_UNSPECIFIED:
        name = "released"
    else:
        name = ReleaseReason.Name(reason).removeprefix("RELEASE_REASON_").lower().replace("_", " ")
    return f"{name}: {detail}" if detail else name


def _find_tx(generation: gen.Generation, conn: Connection) -> Reservation | None:
    """An earlier reservation of the same generation id (a repeated call)."""
    row = conn.execute(_BY_ID, {"gid": generation.id}).first()
    if row is None:
        return None
    tariff = gen.Tariff.FromString(row.tariff)
    return Reservation(
        gen.Cost(tokens=row.reserved_tokens, usd_micros=row.reserved_usd_micros), tariff.per_image, tariff
    )


def _capture_tx(
    generation_id: str, images: int, usage: gen.Usage | None, now: int, conn: Connection
) -> _Settled | None:
    row = conn.execute(_OPEN, {"gid": generation_id}).first()
    if row is None or row.status != "reserved":
        return None
    cost = final_cost(gen.Tariff.FromString(row.tariff), images, usage)
    charged = min(cost.tokens, row.reserved_tokens)
    params = {"gid": generation_id, "now": now, "produced": images, "tokens": charged, "usd": cost.usd_micros}
    if conn.execute(_CAPTURE, params).rowcount != 1:
        return None
    refund = row.reserved_tokens - charged
    after = conn.execute(_ADD, {"account": row.account_id, "tokens": refund}).scalar_one()
    conn.execute(
        _INSERT_ENTRY,
        _entry(
            row.account_id,
            "capture",
            generation_id,
            refund,
            after,
            now,
            api_key_id=row.api_key_id,
            model=row.model,
            images=images,
            charged_tokens=charged,
            charged_usd_micros=cost.usd_micros,
        ),
    )
    return _Settled(charged, refund)


def _release_tx(generation_id: str, note: str, now: int, conn: Connection) -> _Settled | None:
    row = conn.execute(_RELEASE, {"gid": generation_id, "now": now}).first()
    if row is None:  # unknown, or settled before: the first terminal state won
        return None
    after = conn.execute(_ADD, {"account": row.account_id, "tokens": row.reserved_tokens}).scalar_one()
    conn.execute(
        _INSERT_ENTRY,
        _entry(
            row.account_id,
            "release",
            generation_id,
            row.reserved_tokens,
            after,
            now,
            api_key_id=row.api_key_id,
            model=row.model,
            note=note[:500],
        ),
    )
    return _Settled(row.reserved_tokens, row.reserved_tokens)
