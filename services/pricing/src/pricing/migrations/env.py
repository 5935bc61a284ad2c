"""Alembic environment: runs on the connection pricing hands over at start-up
(pricing.db.migrate), or, from the alembic command line, on PRICING_DATABASE_URL."""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

DEFAULT_URL = "sqlite+aiosqlite:///.run/pricing.db"


def run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=None, render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()


async def run_from_url(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(run)
    await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    run(connection)
elif context.is_offline_mode():
    context.configure(url=os.environ.get("PRICING_DATABASE_URL", DEFAULT_URL), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_from_url(os.environ.get("PRICING_DATABASE_URL", DEFAULT_URL)))
