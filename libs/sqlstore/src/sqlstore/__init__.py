"""A service's own SQL database: the operation runner (group commits on SQLite) and its migrations."""

from sqlstore.clock import Clock, now_ms
from sqlstore.database import Database, EngineDatabase, GroupCommitDatabase, TransactionLost, open_database
from sqlstore.migrations import Schema, run_env

__all__ = [
    "Clock",
    "Database",
    "EngineDatabase",
    "GroupCommitDatabase",
    "Schema",
    "TransactionLost",
    "now_ms",
    "open_database",
    "run_env",
]
