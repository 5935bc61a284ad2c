"""A chore a service runs every few seconds (releasing expired reservations, pruning old
idempotency keys): started and stopped with the service, and a failed run is logged and
tried again at the next tick, since its database may be briefly away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from svckit.logging import get_logger

log = get_logger(__name__)


class Periodic:
    """Runs `job()` at start and then every `interval` seconds; a non-zero result is logged as `done`."""

    def __init__(self, name: str, job: Callable[[], Awaitable[int]], interval: float, *, done: str) -> None:
        self._name = name
        self._job = job
        self._interval = interval
        self._done = done
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                if count := await self._job():
                    log.warning(self._done, count=count)
            except Exception as exc:
                log.error(f"{self._name} failed", error=repr(exc))
            await asyncio.sleep(self._interval)
