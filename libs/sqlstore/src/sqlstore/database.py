"""How an operation reaches a service's SQL database: one runner, two backends.

An operation is a plain synchronous function of a SQLAlchemy `Connection` that is
already in a transaction (`op(conn) -> T`); `await database.run(op)` returns its result
once the transaction that ran it has committed, or raises its own exception (nothing it
wrote stays). Operations never commit, roll back or await themselves, and return plain
values (rows fetched, not results to read later); they may open savepoints of their own
(`conn.begin_nested()`). `write=False` marks a read: no savepoint (nothing to undo).

- SQLite (`GroupCommitDatabase`): one writer, so operations commit in groups. Callers
  queue their operations; one task takes every operation waiting (at most `max_group`)
  and runs them all on a dedicated thread in ONE transaction (`BEGIN IMMEDIATE`), each
  write in a SAVEPOINT of its own: an operation that raises (an insufficient balance, a
  rate limit, an IntegrityError) is rolled back to its savepoint and answered with its
  exception, and the others go on. The group then commits once and every caller gets
  its answer. If the commit fails (or SQLite dropped the transaction), no operation of
  the group was written and each is answered with that error. A crash before the commit
  loses the whole group, and no caller of it has been answered: nothing acknowledged is
  lost. The next group forms from whatever queued while this one ran, so an idle
  database adds no wait, and a busy one pays one thread hop and one commit per group.
- PostgreSQL (`EngineDatabase`, several replicas): each operation in its own
  transaction through `AsyncConnection.run_sync` on the asyncpg engine; row locks
  (`SELECT ... FOR UPDATE`) serialise what must be serialised across replicas.

`commits` and `operations` count what was committed, for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, event, text
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

T = TypeVar("T")
Op = Callable[[Connection], T]
# Operations of one SQLite transaction at most: bounds how long a caller waits for a group.
MAX_GROUP = 256


class TransactionLost(RuntimeError):
    """SQLite ended the group's transaction on its own (I/O error, disk full): nothing of it was written."""


class Database:
    """The runner's interface; `open_database` picks the implementation from the URL."""

    dialect: str
    commits: int = 0
    operations: int = 0

    async def run(self, op: Op[T], *, write: bool = True) -> T:  # pragma: no cover - interface
        raise NotImplementedError

    async def close(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def answers(self) -> bool:
        """A readiness check: the database runs a query."""
        await self.run(_select_one, write=False)
        return True


def _select_one(conn: Connection) -> int:
    return conn.execute(text("SELECT 1")).scalar_one()


def open_database(url: str, *, max_group: int = MAX_GROUP) -> Database:
    """A group-committing runner for SQLite (any sqlite driver in the URL), else the async engine's."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        return GroupCommitDatabase(parsed.set(drivername="sqlite+pysqlite"), max_group=max_group)
    return EngineDatabase(create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True))


class EngineDatabase(Database):
    """One transaction per operation on an AsyncEngine (PostgreSQL replicas)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self.commits = 0
        self.operations = 0

    async def run(self, op: Op[T], *, write: bool = True) -> T:
        if write:
            async with self.engine.begin() as conn:
                result = await conn.run_sync(op)
            self.commits += 1
        else:
            async with self.engine.connect() as conn:
                result = await conn.run_sync(op)
        self.operations += 1
        return result

    async def close(self) -> None:
        await self.engine.dispose()


class _Pending:
    __slots__ = ("future", "op", "write")

    def __init__(self, op: Op[Any], write: bool, future: asyncio.Future[Any]) -> None:
        self.op = op
        self.write = write
        self.future = future


class GroupCommitDatabase(Database):
    """SQLite through one connection on one thread; operations commit in groups (see the module)."""

    def __init__(self, url: URL, *, max_group: int = MAX_GROUP) -> None:
        self.dialect = "sqlite"
        self.commits = 0
        self.operations = 0
        self._max_group = max(1, max_group)
        # One connection, held by the group thread (the pool only lends it). pysqlite would
        # BEGIN on its own before DML only (and COMMIT before DDL), which breaks SAVEPOINTs:
        # that is switched off (isolation_level None) and each group begins its transaction
        # itself, on the driver rather than in a "begin" event (any connection event makes
        # SQLAlchemy dispatch events on every statement).
        self._engine = create_sync_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(self._engine, "connect", self._on_connect)
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._conn: Connection | None = None  # used on the thread only
        self._queue: collections.deque[_Pending] = collections.deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    @staticmethod
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    # ---- the event loop's side ---------------------------------------------------------
    async def run(self, op: Op[T], *, write: bool = True) -> T:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():  # the first call, or the first after close()
            self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlstore-sqlite")
            self._wake = asyncio.Event()
            self._closing = False
            self._task = loop.create_task(self._commit_groups(self._thread), name="sqlite group commit")
        future = loop.create_future()
        self._queue.append(_Pending(op, write, future))
        assert self._wake is not None  # made with the task, never unset
        self._wake.set()
        return await future

    async def _commit_groups(self, thread: concurrent.futures.ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None
        while True:
            if not self._queue:
                if self._closing:
                    await loop.run_in_executor(thread, self._close_on_thread)
                    thread.shutdown(wait=False)
                    return
                await self._wake.wait()
                self._wake.clear()
                continue
            group: list[_Pending] = []
            while self._queue and len(group) < self._max_group:
                pending = self._queue.popleft()
                if not pending.future.done():  # a caller that gave up is not run
                    group.append(pending)
            if not group:
                continue
            try:
                outcomes = await loop.run_in_executor(thread, self._run_group, [(p.op, p.write) for p in group])
            except Exception as exc:  # the executor itself failed: nothing of the group is known to be written
                outcomes = [(False, exc)] * len(group)
            for p, (ok, value) in zip(group, outcomes, strict=True):
                if p.future.done():
                    continue
                if ok:
                    p.future.set_result(value)
                else:
                    p.future.set_exception(value)

    async def close(self) -> None:
        """Answer every operation queued, then close the connection and its thread. As after
        an engine's dispose(), a later run() opens them again (a call still being served in
        a server's shutdown grace is answered)."""
        if self._task is None or self._task.done():
            return
        assert self._wake is not None
        self._closing = True
        self._wake.set()
        await self._task

    # ---- the thread's side -------------------------------------------------------------
    def _close_on_thread(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._engine.dispose()

    def _run_group(self, ops: list[tuple[Op[Any], bool]]) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        try:
            if self._conn is None:
                self._conn = self._engine.connect()
            conn = self._conn
            trans = conn.begin()  # SQLAlchemy's side: pysqlite's begin is a no-op
            raw = conn.connection.dbapi_connection
            assert raw is not None  # None only once invalidated, and _discard drops such a connection
            # IMMEDIATE takes the write lock up front, so another process writing the same file
            # makes this wait (busy timeout) rather than fail when a read turns into a write.
            raw.execute("BEGIN IMMEDIATE" if any(write for _, write in ops) else "BEGIN")
            for op, write in ops:
                if write:
                    # The savepoint straight on the driver: SQLAlchemy's begin_nested() costs
                    # ~60 times as much, per operation, and tracks nothing needed here.
                    raw.execute("SAVEPOINT sqlstore_op")
                    try:
                        value = op(conn)
                    except Exception as exc:  # this operation's refusal or error: only it is undone
                        raw.execute("ROLLBACK TO sqlstore_op")
                        raw.execute("RELEASE sqlstore_op")
                        outcomes.append((False, exc))
                    else:
                        raw.execute("RELEASE sqlstore_op")
                        outcomes.append((True, value))
                else:
                    try:
                        outcomes.append((True, op(conn)))
                    except Exception as exc:
                        outcomes.append((False, exc))
                if not raw.in_transaction:  # SQLite rolled the whole transaction back
                    raise TransactionLost(
                        "The database ended the transaction (I/O error or disk full); nothing of it was written."
                    )
            self._commit(trans)
        except BaseException as exc:  # the commit (or the transaction) failed: every operation of the group with it
            self._discard()
            if not isinstance(exc, Exception):  # SystemExit and the like, from an operation: not for a caller's task
                exc = RuntimeError(f"The group's transaction was abandoned: {exc!r}")
            return [(False, exc)] * len(ops)
        self.commits += 1
        self.operations += len(ops)
        return outcomes

    @staticmethod
    def _commit(trans) -> None:  # noqa: ANN001
        trans.commit()

    def _discard(self) -> None:
        """After a failed group: roll back whatever is left and start the next group on a fresh connection."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.invalidate()
            conn.close()
        except Exception:  # noqa: BLE001 - the connection is being thrown away anyway
            pass
