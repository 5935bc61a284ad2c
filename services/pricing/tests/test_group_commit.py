"""SQLite group commit (sqlstore.GroupCommitDatabase) under the ledger: operations waiting commit
together, each answered with its own result or its own error; a failed commit fails the
whole group; a crash in the middle of a group loses nothing anyone was told about.

Run as a script, this file is the child process of the crash tests (see `child`).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.pricing.v1 import pricing_service_pb2 as pb
from pricing.db import accounts, ledger_entries, migrate, open_database, reservations
from pricing.keys import KeyStore
from pricing.ledger import Ledger
from pricing.plans import Plans
from pricing.prices import PriceTable
from sqlstore import GroupCommitDatabase
from svckit.errors import ErrorCode, GatewayError
from svckit.ids import new_generation_id
from svckit.logging import configure_logging
from tests.support.ledger import explain

HERE = Path(__file__).resolve()
ROOT = HERE.parents[3]


def url_of(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def open_ledger(path: Path, **kwargs) -> tuple[GroupCommitDatabase, KeyStore, Ledger]:  # noqa: ANN003
    db = open_database(url_of(path), **kwargs)
    assert isinstance(db, GroupCommitDatabase)
    await migrate(db)
    plans, prices = Plans.load(), PriceTable.load()
    return db, KeyStore(db, plans), Ledger(db, prices, plans)


def generation(key, n: int = 1) -> gen.Generation:  # noqa: ANN001
    p = gen.GenerationParams(model="pixelmesh-sketch", prompt="grouped", n=n, size="512x512", quality="standard")
    return gen.Generation(
        id=new_generation_id(),
        account_id=key.account_id,
        api_key_id=key.id,
        model="pixelmesh-sketch",
        params=p,
        quality="standard",
    )


def open_account(account_id: str):  # noqa: ANN201
    def op(conn: Connection) -> str:
        conn.execute(insert(accounts).values(id=account_id, balance_tokens=0, created_ms=0))
        return account_id

    return op


def failing(account_id: str):  # noqa: ANN201
    def op(conn: Connection) -> None:
        conn.execute(insert(accounts).values(id=account_id, balance_tokens=0, created_ms=0))
        raise ValueError(f"refused {account_id}")

    return op


def account_ids(conn: Connection) -> set[str]:
    return set(conn.execute(select(accounts.c.id)).scalars())


@pytest.fixture
async def ledger(tmp_path: Path):  # noqa: ANN201
    db, keys, ledger = await open_ledger(tmp_path / "p.db")
    yield db, keys, ledger
    await db.close()


async def test_concurrent_reserves_and_captures_commit_in_groups_each_with_its_own_answer(ledger) -> None:  # noqa: ANN001
    db, keys, led = ledger
    key, _ = await keys.create(
        plan="pro", name="grouped", limits={"images_per_minute": 0, "images_per_day": 0, "max_concurrent": 0}
    )
    await led.credit(key.account_id, 10)
    gens = [generation(key) for _ in range(30)]
    commits, operations = db.commits, db.operations
    results = await asyncio.gather(*(led.reserve(g) for g in gens), return_exceptions=True)
    ok = [g for g, r in zip(gens, results, strict=True) if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    # the ten that fit are held, each refusal is its own and names the balance left
    assert len(ok) == 10 and len(refused) == 20, results
    assert {(e.code, "the account has 0 available" in e.message) for e in refused} == {
        (ErrorCode.INSUFFICIENT_BALANCE, True)
    }
    # 30 reservations, then the 20 refused ones looked up (a repeated call?): two groups, not 50 commits
    assert db.operations - operations == 50
    assert db.commits - commits <= 3, (db.commits - commits, db.operations - operations)
    commits, operations = db.commits, db.operations
    assert all(await asyncio.gather(*(led.capture(g.id, 1) for g in ok)))
    assert not any(await asyncio.gather(*(led.capture(g.id, 1) for g in ok)))  # once
    assert db.operations - operations == 20 and db.commits - commits <= 4
    balance = await led.balance(key.account_id)
    assert (balance.available_tokens, balance.reserved_tokens) == (0, 0)
    rows = await led.entries(key.account_id)
    assert Counter(r.kind for r in rows) == {"credit": 1, "reserve": 10, "capture": 10}


async def test_a_limit_refusal_in_a_group_leaves_the_others_alone(ledger) -> None:  # noqa: ANN001
    db, keys, led = ledger
    capped, _ = await keys.create(plan="free", name="two at once", limits={"images_per_minute": 0, "images_per_day": 0})
    unlimited, _ = await keys.create(
        plan="pro", name="no limits", limits={"images_per_minute": 0, "images_per_day": 0, "max_concurrent": 0}
    )
    for k in (capped, unlimited):
        await led.credit(k.account_id, 100)
    commits = db.commits
    mixed = [generation(capped) if i % 2 else generation(unlimited) for i in range(12)]
    results = await asyncio.gather(*(led.reserve(g) for g in mixed), return_exceptions=True)
    by_key = Counter((g.api_key_id, type(r).__name__) for g, r in zip(mixed, results, strict=True))
    # the free plan runs two at once: four of the capped key's six are refused, every other one is held
    assert by_key == {(unlimited.id, "Reservation"): 6, (capped.id, "Reservation"): 2, (capped.id, "GatewayError"): 4}
    assert {r.code for r in results if isinstance(r, GatewayError)} == {ErrorCode.RATE_LIMITED}
    assert db.commits - commits <= 3
    for k, held in ((unlimited, 6), (capped, 2)):
        balance = await led.balance(k.account_id)
        assert (balance.available_tokens, balance.reserved_tokens) == (100 - held, held)


async def test_an_operation_that_raises_is_undone_alone(tmp_path: Path) -> None:
    db = open_database(url_of(tmp_path / "p.db"))
    await migrate(db)
    try:
        commits = db.commits
        results = await asyncio.gather(
            db.run(open_account("a")),
            db.run(failing("b")),
            db.run(open_account("c")),
            db.run(open_account("a")),
            return_exceptions=True,
        )
        assert results[0] == "a" and results[2] == "c"
        assert isinstance(results[1], ValueError) and str(results[1]) == "refused b"
        assert isinstance(results[3], IntegrityError)  # a duplicate, refused by the constraint alone
        assert db.commits - commits == 1
        assert await db.run(account_ids, write=False) == {"a", "c"}
    finally:
        await db.close()


async def test_a_failed_commit_fails_every_operation_of_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = open_database(url_of(tmp_path / "p.db"))
    await migrate(db)
    real = GroupCommitDatabase._commit
    failures = []

    def commit_fails_once(trans) -> None:  # noqa: ANN001
        if not failures:
            failures.append(1)
            raise OperationalError("COMMIT", {}, Exception("disk I/O error"))
        real(trans)

    monkeypatch.setattr(GroupCommitDatabase, "_commit", staticmethod(commit_fails_once))
    try:
        commits = db.commits
        results = await asyncio.gather(
            *(db.run(open_account(f"x{i}")) for i in range(5)), db.run(failing("y")), return_exceptions=True
        )
        assert all(isinstance(r, OperationalError) for r in results), (
            results
        )  # the refused one too: nothing was written
        assert db.commits == commits
        assert await db.run(account_ids, write=False) == set()
        assert await db.run(open_account("after")) == "after"  # the next group, on a fresh connection
        assert await db.run(account_ids, write=False) == {"after"}
    finally:
        await db.close()


async def test_a_group_whose_transaction_sqlite_ended_fails_as_a_whole(tmp_path: Path) -> None:
    """SQLite rolls a transaction back on its own after some errors (disk full, I/O): the
    operations after it would then autocommit one by one and the earlier ones be gone, so
    the group fails instead, every operation with it."""
    db = open_database(url_of(tmp_path / "p.db"))
    await migrate(db)
    try:

        def ends_the_transaction(conn: Connection) -> None:
            conn.connection.dbapi_connection.execute("ROLLBACK")

        results = await asyncio.gather(
            db.run(open_account("before")),
            db.run(ends_the_transaction),
            db.run(open_account("after")),
            return_exceptions=True,
        )
        assert all(isinstance(r, Exception) for r in results), results
        assert await db.run(account_ids, write=False) == set()
        assert await db.run(open_account("next")) == "next"
    finally:
        await db.close()


async def test_groups_are_capped(tmp_path: Path) -> None:
    db = open_database(url_of(tmp_path / "p.db"), max_group=4)
    await migrate(db)
    try:
        commits = db.commits
        assert len(await asyncio.gather(*(db.run(open_account(f"c{i}")) for i in range(10)))) == 10
        assert db.commits - commits == 3  # 4 + 4 + 2
    finally:
        await db.close()


async def test_a_caller_that_gave_up_before_its_group_is_not_run(tmp_path: Path) -> None:
    db = open_database(url_of(tmp_path / "p.db"))
    await migrate(db)
    try:
        gate = threading.Event()
        busy = asyncio.ensure_future(db.run(lambda conn: gate.wait(10)))  # holds the thread: the next group waits
        await asyncio.sleep(0.05)
        late = asyncio.ensure_future(db.run(open_account("gave-up")))
        kept = asyncio.ensure_future(db.run(open_account("kept")))
        await asyncio.sleep(0.05)
        late.cancel()
        gate.set()
        assert await busy and await kept == "kept"
        assert await db.run(account_ids, write=False) == {"kept"}
    finally:
        await db.close()


async def test_close_answers_what_is_queued_and_a_later_call_reopens(tmp_path: Path) -> None:
    db = open_database(url_of(tmp_path / "p.db"))
    await migrate(db)
    pending = [asyncio.ensure_future(db.run(open_account(f"q{i}"))) for i in range(5)]
    await asyncio.sleep(0)
    await db.close()
    assert [p.result() for p in pending] == [f"q{i}" for i in range(5)]
    assert len(await db.run(account_ids, write=False)) == 5  # e.g. a call still served in the shutdown grace
    await db.close()


# ---- crashes -------------------------------------------------------------------------
async def prepare(path: Path, accounts_n: int = 4, tokens: int = 1_000_000) -> list[tuple[str, str]]:
    db, keys, led = await open_ledger(path)
    made = []
    for i in range(accounts_n):
        key, _ = await keys.create(
            plan="pro", name=f"crash {i}", limits={"images_per_minute": 0, "images_per_day": 0, "max_concurrent": 0}
        )
        await led.credit(key.account_id, tokens)
        made.append((key.id, key.account_id))
    await db.close()
    return made


def start_child(path: Path, mode: str, made: list[tuple[str, str]]) -> subprocess.Popen:
    keys = ",".join(f"{k}@{a}" for k, a in made)
    return subprocess.Popen(
        [sys.executable, str(HERE), mode, str(path), keys],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def read_acks(proc: subprocess.Popen, until: int | None, timeout: float = 60) -> tuple[set[str], set[str], set[str]]:
    """(reserved, captured, queued-but-unanswered) ids the child printed; SIGKILLs it after `until` acks."""
    reserved, captured, queued = set(), set(), set()
    watchdog = threading.Timer(timeout, proc.kill)  # a child that hangs fails the test (its return code)
    watchdog.start()
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            kind, _, gid = line.strip().partition(" ")
            {"R": reserved, "C": captured, "Q": queued}.get(kind, set()).add(gid)
            if until is not None and len(reserved) >= until:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=30)
    finally:
        watchdog.cancel()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else proc.returncode
    return reserved, captured, queued


async def check_after_crash(path: Path, made: list[tuple[str, str]], reserved: set[str], captured: set[str]) -> dict:
    """Reopen the database (as a restarted pricing would) and hold every ledger rule."""
    db, _, led = await open_ledger(path)
    try:

        def read(conn: Connection):  # noqa: ANN202
            res = {
                r.generation_id: r.status
                for r in conn.execute(select(reservations.c.generation_id, reservations.c.status))
            }
            moves = Counter(
                (r.reference, r.kind) for r in conn.execute(select(ledger_entries.c.reference, ledger_entries.c.kind))
            )
            return res, moves

        res, moves = await db.run(read, write=False)
        assert reserved <= set(res), "a reservation its caller was told about is gone"
        assert captured <= {g for g, s in res.items() if s == "captured"}, "a capture its caller was told about is gone"
        for gid, status in res.items():  # every reservation with its ledger rows, once
            assert moves[(gid, "reserve")] == 1, gid
            assert moves[(gid, "capture")] == (status == "captured"), gid
        assert {g for g, kind in moves if kind in ("reserve", "capture")} <= set(res), (
            "a ledger row without its reservation"
        )
        assert max(moves.values()) == 1
        for _, account_id in made:  # every balance is its ledger rows summed, row by row
            balance = await led.balance(account_id)
            out = pb.ListLedgerEntriesResponse(
                balance=pb.Balance(account_id=account_id, available_tokens=balance.available_tokens)
            )
            for e in await led.entries(account_id, limit=5000):
                out.entries.add(
                    id=e.id,
                    kind=e.kind,
                    reference=e.reference,
                    amount_tokens=e.amount_tokens,
                    balance_after=e.balance_after,
                )
            explain(out)
        # and the ledger takes new work after the restart
        key_id, account_id = made[0]
        g = gen.Generation(
            id=new_generation_id(),
            account_id=account_id,
            api_key_id=key_id,
            model="pixelmesh-sketch",
            params=gen.GenerationParams(
                model="pixelmesh-sketch", prompt="after", n=1, size="512x512", quality="standard"
            ),
        )
        await led.reserve(g)
        assert await led.capture(g.id, 1)
        return res
    finally:
        await db.close()


async def test_a_pricing_killed_mid_stream_loses_nothing_it_answered(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    made = await prepare(path)
    proc = start_child(path, "stream", made)
    reserved, captured, _ = await asyncio.to_thread(read_acks, proc, 300)
    assert len(reserved) >= 300 and captured
    res = await check_after_crash(path, made, reserved, captured)
    assert len(res) >= len(reserved)


async def test_a_group_interrupted_by_a_crash_is_not_written_at_all(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    made = await prepare(path)
    proc = start_child(path, "kill-in-group", made)
    reserved, captured, queued = await asyncio.to_thread(read_acks, proc, None)
    assert len(reserved) == 20 and len(queued) == 40 and not captured
    res = await check_after_crash(path, made, reserved, captured)
    # the 40 of the interrupted group had written their rows in its transaction, uncommitted:
    # none of them is there, and no caller was told otherwise
    assert not queued & set(res)
    assert set(res) >= reserved


# ---- the child -----------------------------------------------------------------------
async def child(mode: str, path: str, spec: str) -> None:
    """`stream`: reserve then capture, 32 at a time, printing each answer (R id, C id) as it
    comes, until killed. `kill-in-group`: 20 answered reservations, then 40 more queued in
    one group (Q id) with an operation that SIGKILLs the process before the group commits."""
    configure_logging("pricing", "WARNING")
    db, _, led = await open_ledger(Path(path))
    keys = [tuple(k.split("@")) for k in spec.split(",")]

    class Key:
        def __init__(self, key_id: str, account_id: str) -> None:
            self.id, self.account_id = key_id, account_id

    pool = [Key(k, a) for k, a in keys]

    def say(kind: str, gid: str) -> None:
        sys.stdout.write(f"{kind} {gid}\n")
        sys.stdout.flush()

    if mode == "stream":

        async def worker(i: int) -> None:
            while True:
                g = generation(pool[i % len(pool)])
                await led.reserve(g)
                say("R", g.id)
                assert await led.capture(g.id, 1)
                say("C", g.id)

        await asyncio.gather(*(worker(i) for i in range(32)))
    else:
        for i in range(20):
            g = generation(pool[i % len(pool)])
            await led.reserve(g)
            say("R", g.id)
        gate = threading.Event()
        busy = asyncio.ensure_future(db.run(lambda conn: gate.wait(10)))  # the next group forms behind it
        await asyncio.sleep(0.05)
        late = [generation(pool[i % len(pool)]) for i in range(40)]
        tasks = [asyncio.ensure_future(led.reserve(g)) for g in late]
        killer = asyncio.ensure_future(db.run(lambda conn: os.kill(os.getpid(), signal.SIGKILL)))
        await asyncio.sleep(0.05)
        for g in late:
            say("Q", g.id)
        gate.set()
        await asyncio.gather(busy, killer, *tasks)
        say("X", "the group committed: the kill did not happen")


if __name__ == "__main__":
    asyncio.run(child(*sys.argv[1:4]))
