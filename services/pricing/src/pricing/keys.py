"""Accounts and API keys: created, listed, revoked; authenticated on every call.

Secrets are random (`pm-` + 256 bits) and stored only as their SHA-256 digest: a
high-entropy secret needs no slow hash, and a digest lookup is one indexed query.
Every Authenticate reads the database, so pricing refuses a revoked key at once, on
every replica; the edge remembers an answer for EDGE_AUTH_CACHE_SECONDS (edge.auth_cache),
and the reservation checks the key again, so spending stops at once regardless.
"""

from __future__ import annotations

import builtins
import hashlib
import secrets
from dataclasses import dataclass
from functools import partial

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from pricing.db import accounts, api_keys, ledger_entries
from pricing.plans import Plans
from sqlstore import Clock, Database, now_ms
from svckit.errors import ErrorCode, GatewayError, invalid
from svckit.logging import get_logger

log = get_logger(__name__)
LIMIT_NAMES = ("images_per_minute", "images_per_day", "max_concurrent")
# The development keys' limits: none (they serve every engineer's tests at full speed).
DEV_KEY_LIMITS = {name: 0 for name in LIMIT_NAMES}
WRONG_KEY = "Incorrect API key provided."

# Built once (the compiled-statement cache then hits on every call); bound per call.
_BY_HASH = select(api_keys.c.id, api_keys.c.account_id, api_keys.c.plan, api_keys.c.revoked_ms).where(
    api_keys.c.key_hash == bindparam("key_hash")
)
_ACCOUNT_EXISTS = select(accounts.c.id).where(accounts.c.id == bindparam("account_id"))
_KEY_EXISTS = select(api_keys.c.id).where(api_keys.c.id == bindparam("key_id"))
_INSERT_ACCOUNT = insert(accounts)
_INSERT_KEY = insert(api_keys)
_INSERT_ENTRY = insert(ledger_entries)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    account_id: str
    api_key_id: str
    plan: str
    retention_class: str


@dataclass(frozen=True)
class KeyInfo:
    id: str
    account_id: str
    name: str
    plan: str
    prefix: str
    created_ms: int
    revoked_ms: int | None
    limits: dict[str, int]


def _info(row) -> KeyInfo:  # noqa: ANN001
    return KeyInfo(
        row.id, row.account_id, row.name, row.plan, row.prefix, row.created_ms, row.revoked_ms, dict(row.limits or {})
    )


def check_limits(limits: dict[str, int] | None) -> dict[str, int]:
    out = {}
    for name, value in (limits or {}).items():
        if name not in LIMIT_NAMES:
            raise invalid(f"Unknown limit {name!r}; limits: {', '.join(LIMIT_NAMES)}.", name)
        if value < 0:
            raise invalid(f"{name} must be 0 (no limit) or more.", name)
        out[name] = int(value)
    return out


def ensure_account(conn: Connection, account_id: str, created_ms: int) -> None:
    """Open the account (balance 0) unless it exists; safe when two replicas race."""
    if conn.execute(_ACCOUNT_EXISTS, {"account_id": account_id}).first():
        return
    try:
        with conn.begin_nested():
            conn.execute(_INSERT_ACCOUNT, {"id": account_id, "balance_tokens": 0, "created_ms": created_ms})
    except IntegrityError:
        pass  # opened meanwhile by another transaction


class KeyStore:
    def __init__(self, database: Database, plans: Plans, clock: Clock = now_ms) -> None:
        self._db = database
        self._plans = plans
        self._clock = clock

    @property
    def default_plan(self) -> str:
        return self._plans.default

    async def authenticate(self, secret: str) -> Principal:
        """One indexed read, every call: a revoked key is refused at once on every replica."""
        if not secret:
            raise GatewayError(ErrorCode.UNAUTHENTICATED, WRONG_KEY)
        row = await self._db.run(partial(_find_key, digest(secret)), write=False)
        if row is None or row.revoked_ms is not None:
            raise GatewayError(ErrorCode.UNAUTHENTICATED, WRONG_KEY)
        return Principal(row.account_id, row.id, row.plan, self._plans.get(row.plan).retention_class)

    async def create(
        self, *, plan: str, name: str, account_id: str = "", limits: dict[str, int] | None = None
    ) -> tuple[KeyInfo, str]:
        """A new key (and a new account when none is named). Returns the key and its secret."""
        self._plans.get(plan)
        limits = check_limits(limits)
        if not name.strip():
            raise invalid("A key needs a name.", "name")
        if len(name) > 200:
            raise invalid("A key name is at most 200 characters.", "name")
        secret = "pm-" + secrets.token_urlsafe(32)
        key_id = "key_" + secrets.token_hex(8)
        account_id = account_id or "acct_" + secrets.token_hex(8)
        if len(account_id) > 64:
            raise invalid("An account id is at most 64 characters.", "account_id")
        now = self._clock()
        row = {
            "id": key_id,
            "account_id": account_id,
            "key_hash": digest(secret),
            "prefix": secret[:10],
            "name": name.strip(),
            "plan": plan,
            "limits": limits or None,
            "created_ms": now,
            "revoked_ms": None,
        }

        def create_key(conn: Connection) -> None:
            ensure_account(conn, account_id, now)
            conn.execute(_INSERT_KEY, row)

        await self._db.run(create_key)
        log.info("api key created", api_key_id=key_id, account_id=account_id, plan=plan)
        return KeyInfo(key_id, account_id, name.strip(), plan, secret[:10], now, None, limits), secret

    async def list(self, account_id: str = "") -> list[KeyInfo]:
        query = select(api_keys).order_by(api_keys.c.created_ms, api_keys.c.id)
        if account_id:
            query = query.where(api_keys.c.account_id == account_id)
        return await self._db.run(lambda conn: [_info(r) for r in conn.execute(query)], write=False)

    async def revoke(self, key_id: str) -> KeyInfo:
        revoked_ms = self._clock()

        def revoke_key(conn: Connection):  # noqa: ANN202
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_ms.is_(None))
                .values(revoked_ms=revoked_ms)
            )
            return conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()

        row = await self._db.run(revoke_key)
        if row is None:
            raise GatewayError(ErrorCode.NOT_FOUND, f"No API key with id '{key_id}'.", param="api_key_id")
        log.info("api key revoked", api_key_id=key_id, account_id=row.account_id)
        return _info(row)

    # builtins.list: in this class `list` is the method above.
    async def seed_dev_keys(self, spec: str, balance_tokens: int) -> builtins.list[Principal]:
        """Development keys from PRICING_DEV_API_KEY (`key` or `key@account`, comma-separated;
        a bare key belongs to acct_dev), on the pro plan without limits. A new account gets
        `balance_tokens` as a credit. Existing keys and accounts are left as they are."""
        seeded = []
        for entry in filter(None, (e.strip() for e in spec.split(","))):
            secret, _, account_id = entry.partition("@")
            account_id = account_id or "acct_dev"
            key_id = "key_" + hashlib.sha256(secret.encode()).hexdigest()[:12]
            try:
                await self._db.run(partial(_seed, account_id, key_id, secret, balance_tokens, self._clock()))
            except IntegrityError:
                pass  # another replica seeded it at the same moment
            seeded.append(Principal(account_id, key_id, "pro", self._plans.get("pro").retention_class))
        return seeded


def _find_key(key_hash: str, conn: Connection):  # noqa: ANN202
    return conn.execute(_BY_HASH, {"key_hash": key_hash}).first()


def _seed(account_id: str, key_id: str, secret: str, balance: int, now: int, conn: Connection) -> None:
    if not conn.execute(_ACCOUNT_EXISTS, {"account_id": account_id}).first():
        conn.execute(_INSERT_ACCOUNT, {"id": account_id, "balance_tokens": balance, "created_ms": now})
        conn.execute(
            _INSERT_ENTRY,
            {
                "account_id": account_id,
                "kind": "credit",
                "reference": f"dev-seed:{account_id}",
                "amount_tokens": balance,
                "balance_after": balance,
                "charged_tokens": 0,
                "charged_usd_micros": 0,
                "api_key_id": "",
                "model": "",
                "images": 0,
                "note": "development account",
                "created_ms": now,
            },
        )
    if not conn.execute(_KEY_EXISTS, {"key_id": key_id}).first():
        conn.execute(
            _INSERT_KEY,
            {
                "id": key_id,
                "account_id": account_id,
                "key_hash": digest(secret),
                "prefix": secret[:10],
                "name": "development key",
                "plan": "pro",
                "limits": DEV_KEY_LIMITS,
                "created_ms": now,
                "revoked_ms": None,
            },
        )
