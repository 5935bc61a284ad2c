"""The storage of record: tables, the database runner, and migrations at start-up.

SQLite (a file) by default, PostgreSQL when pricing runs as several replicas. Times are
epoch milliseconds (integers), so both databases compare and group them the same way.
The schema itself is created by the Alembic migrations in pricing/migrations; the tables
here describe it for queries and must match the latest migration (a test checks that).
Every query runs through sqlstore (`open_database`): group commits on SQLite, one
transaction per operation on PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

from sqlstore import Database, Schema, open_database

__all__ = [
    "Database",
    "accounts",
    "SCHEMA",
    "api_keys",
    "ledger_entries",
    "metadata",
    "migrate",
    "open_database",
    "reservations",
]

# alembic's default version table: the one pricing's databases have had from the start.
SCHEMA = Schema(
    script_location=Path(__file__).with_name("migrations"),
    version_table="alembic_version",
    url_variable="PRICING_DATABASE_URL",
    default_url="sqlite+aiosqlite:///.run/pricing.db",
)

metadata = MetaData()
_Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only

accounts = Table(
    "accounts",
    metadata,
    Column("id", String(64), primary_key=True),
    # Tokens available to new generations (open reservations are already taken off).
    Column("balance_tokens", BigInteger, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("account_id", String(64), nullable=False, index=True),
    # Hex SHA-256 of the secret; the secret itself is never stored.
    Column("key_hash", String(64), nullable=False),
    Column("prefix", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("plan", String(32), nullable=False),
    # Overrides of the plan's limits: {"images_per_minute": 0, ...} (0: no limit).
    Column("limits", JSON, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger, nullable=True),
    UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
)

reservations = Table(
    "reservations",
    metadata,
    Column("generation_id", String(64), primary_key=True),
    Column("account_id", String(64), nullable=False),
    Column("api_key_id", String(40), nullable=False),
    Column("model", String(100), nullable=False),
    Column("size", String(32), nullable=False),
    Column("quality", String(32), nullable=False),
    Column("n", Integer, nullable=False),
    Column("reserved_tokens", BigInteger, nullable=False),
    Column("reserved_usd_micros", BigInteger, nullable=False),
    # pixelmesh.common.v1.Tariff, serialised.
    Column("tariff", LargeBinary, nullable=False),
    # reserved -> captured | released, once.
    Column("status", String(16), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("settled_ms", BigInteger, nullable=True),
    Column("images", Integer, nullable=False),
    Column("charged_tokens", BigInteger, nullable=False),
    Column("charged_usd_micros", BigInteger, nullable=False),
    Index("ix_reservations_key_time", "api_key_id", "created_ms"),
    Index("ix_reservations_status_time", "status", "created_ms"),
    # The concurrency limit counts a key's open reservations (migration 0002).
    Index("ix_reservations_key_status", "api_key_id", "status"),
)

ledger_entries = Table(
    "ledger_entries",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("account_id", String(64), nullable=False),
    # credit | reserve | capture | release
    Column("kind", String(16), nullable=False),
    # The generation id, or a credit's reference.
    Column("reference", String(128), nullable=False),
    Column("amount_tokens", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("charged_tokens", BigInteger, nullable=False),
    Column("charged_usd_micros", BigInteger, nullable=False),
    Column("api_key_id", String(40), nullable=False),
    Column("model", String(100), nullable=False),
    Column("images", Integer, nullable=False),
    Column("note", String(500), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    # A redelivered event can never write the same movement twice, and a credit's reference
    # is one account's (migration 0003).
    UniqueConstraint("account_id", "reference", "kind", name="uq_ledger_account_reference_kind"),
    Index("ix_ledger_account", "account_id", "id"),
    Index("ix_ledger_account_kind_time", "account_id", "kind", "created_ms"),
)


async def migrate(database: Database) -> None:
    """`alembic upgrade head` of pricing's schema, once even when replicas start together."""
    await SCHEMA.migrate(database)
