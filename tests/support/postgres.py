"""A throwaway PostgreSQL for the ledger tests, started with deploy/local/postgres.sh.

`PostgresServer` runs one private cluster on a free port in a temporary folder (under
/tmp, which the `postgres` system user can reach when the tests run as root);
`new_database()` hands each test a database of its own.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import asyncpg

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy/local/postgres.sh"
USER = "pixelmesh"
PASSWORD = "pixelmesh-test-" + secrets.token_hex(6)


class PostgresServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.data_dir = Path(tempfile.mkdtemp(prefix="pixelmesh-pg-"))
        self.env = {
            **os.environ,
            "PG_PORT": str(self.port),
            "PG_DATA_DIR": str(self.data_dir),
            "PG_USER": USER,
            "PG_PASSWORD": PASSWORD,
            "PG_DATABASE": "pixelmesh",
            "PG_FSYNC": "off",
        }

    def start(self) -> PostgresServer:
        subprocess.run(["bash", str(SCRIPT), "start"], env=self.env, check=True, timeout=600)
        return self

    def stop(self) -> None:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=self.env, check=False, timeout=120)
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def url(self, database: str = "pixelmesh") -> str:
        return f"postgresql+asyncpg://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    async def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        name = "t_" + secrets.token_hex(6)
        conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, database="postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)
