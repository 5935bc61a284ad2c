"""A service's own SQL database: the operation runner (group commits on SQLite) and its migrations."""

from sqlstore.database import Database, EngineDatabase, GroupCommitDatabase, TransactionLost, open_database
from sqlstore.migrations import Schema, run_env

__all__ = [
    "Database",
    "EngineDatabase",
    "GroupCommitDatabase",
    "Schema",
    "TransactionLost",
    "open_database",
    "run_env",
]
