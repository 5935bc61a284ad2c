"""Alembic environment of pricing's schema (sqlstore.run_env): on the connection pricing
hands over at start-up (pricing.db.migrate), or, from alembic's command line, on
PRICING_DATABASE_URL."""

from pricing.db import SCHEMA
from sqlstore import run_env

run_env(SCHEMA)
