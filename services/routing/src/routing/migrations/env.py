"""Alembic environment of routing's schema (sqlstore.run_env): on the connection routing
hands over at start-up, or, from alembic's command line, on ROUTING_DATABASE_URL."""

from routing.idempotency import SCHEMA
from sqlstore import run_env

run_env(SCHEMA)
