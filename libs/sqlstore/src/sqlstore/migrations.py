"""Alembic migrations of a service's own schema: at start-up, and from alembic's command line.

Services may share one PostgreSQL database (pricing's ledger and routing's idempotency keys
in the chart's `database.url`), so each keeps its revisions in a version table of its own
and takes an advisory lock of its own while it upgrades.
"""

from __future__ import annotations

import asyncio
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command, context
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import create_async_engine

from sqlstore.database import Database


@dataclass(frozen=True)
class Schema:
    """One service's migrations: their folder, its version table, and the URL alembic's CLI uses."""

    script_location: Path
    version_table: str
    url_variable: str
    default_url: str

    @property
    def lock_key(self) -> int:
        """The PostgreSQL advisory lock that serialises this schema's upgrades across replicas."""
        return zlib.crc32(self.version_table.encode())

    def config(self, connection: Connection | None = None) -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(self.script_location))
        cfg.attributes["schema"] = self
        if connection is not None:
            cfg.attributes["connection"] = connection
        return cfg

    async def migrate(self, database: Database) -> None:
        """`alembic upgrade head`, once even when replicas start together."""
        await database.run(self._upgrade)

    def _upgrade(self, conn: Connection) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": self.lock_key})
        command.upgrade(self.config(conn), "head")


def run_env(schema: Schema) -> None:
    """The body of a migrations folder's env.py: on the connection handed over by
    `Schema.migrate`, or, from alembic's command line, on the URL in `schema.url_variable`."""
    # alembic's context.configure keywords, each with its own type.
    options: dict[str, Any] = {"version_table": schema.version_table, "target_metadata": None}
    connection = context.config.attributes.get("connection")
    url = os.environ.get(schema.url_variable, schema.default_url)
    if connection is not None:
        _run(connection, options)
    elif context.is_offline_mode():
        context.configure(url=url, literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(_run_from_url(url, options))


def _run(connection: Connection, options: dict[str, Any]) -> None:
    context.configure(connection=connection, render_as_batch=connection.dialect.name == "sqlite", **options)
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str, options: dict[str, Any]) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_run, options)
    await engine.dispose()
