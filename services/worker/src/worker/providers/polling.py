"""Submit-then-poll upstreams (BFL, Midjourney proxies, Replicate, fal): what they share.

- `PollClock`: growing, jittered intervals between polls, bounded by
  WORKER_POLL_MAX_INTERVAL_SECONDS, and the job timeout (WORKER_JOB_TIMEOUT_SECONDS) after
  which the job is abandoned as a retryable TIMEOUT. A job waiting for its next poll is
  one sleeping coroutine: a worker holds thousands of them without a thread each.
- `Fanout`: n upstream jobs for one generation (upstreams that make one image per job),
  their progress averaged, the first failure cancelling the others.
- `percent_of`: the many ways upstreams say how far along they are.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from svckit.errors import ErrorCode
from worker.providers.base import Progress, ProviderError
from worker.providers.settings import UpstreamSettings

T = TypeVar("T")
# HTTP connections per polling adapter. Polls are short requests: a few connections carry
# thousands of jobs, and httpcore's pool does work quadratic in its size on every request.
POLL_CONNECTIONS = 8
GROWTH = 1.5
JITTER = 0.2  # +-20 %, so jobs submitted together do not poll in lockstep
ETA_FRACTION = 10  # the first poll after a tenth of the expected run (within the bounds)
_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")


class PollClock:
    """`eta_seconds` (the catalog's estimate) sets a later first poll for long jobs: a
    Midjourney run of a minute is not polled every second at first."""

    def __init__(self, provider: str, settings: UpstreamSettings, *, eta_seconds: float = 0) -> None:
        self._provider = provider
        self._max = settings.poll_max_interval_seconds
        self._interval = max(settings.poll_interval_seconds, min(self._max, eta_seconds / ETA_FRACTION))
        self._timeout = settings.job_timeout_seconds
        self._deadline = time.monotonic() + settings.job_timeout_seconds

    def timeout_error(self) -> ProviderError:
        return ProviderError(
            ErrorCode.TIMEOUT, f"{self._provider} did not finish the job within {self._timeout:.0f} s", retryable=True
        )

    async def wait(self) -> None:
        """Sleep until the next poll; raise TIMEOUT once the job's time is up."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise self.timeout_error()
        delay = self._interval * random.uniform(1 - JITTER, 1 + JITTER)
        self._interval = min(self._max, self._interval * GROWTH)
        await asyncio.sleep(min(delay, remaining))


def percent_of(value: object) -> float | None:
    """0..100 from "37%", 0.37, 37, or the last "NN%" of a log; None when unknown."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
        return max(0.0, min(100.0, number * 100 if number <= 1.0 else number))
    if isinstance(value, str):
        found = _PERCENT.findall(value)
        if found:
            return max(0.0, min(100.0, float(found[-1])))
    return None


class Fanout:
    """Progress of n parallel upstream jobs reported as one (the mean), only when it moved."""

    def __init__(self, progress: Progress, n: int) -> None:
        self._progress = progress
        self._parts = [0.0] * n
        self._reported = -1.0
        self._ids: list[str] = [""] * n

    async def upstream(self, index: int, job_id: str) -> None:
        """Name the index-th upstream job; the attempt records them all, comma-separated, with
        the progress event sent now (so a cancel can find them before the job moves)."""
        self._ids[index] = job_id
        self._progress.upstream(",".join(i for i in self._ids if i))
        self._reported = max(self._reported, 0.0)
        await self._progress(self._reported)

    async def report(self, index: int, percent: float) -> None:
        self._parts[index] = percent
        mean = sum(self._parts) / len(self._parts)
        if mean >= self._reported + 1.0 or (mean >= 100.0 > self._reported):
            self._reported = mean
            await self._progress(mean)


async def run_all(jobs: Sequence[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run the jobs concurrently, results in order; the first failure cancels the rest and is raised."""
    if len(jobs) == 1:
        return [await jobs[0]()]
    tasks = [asyncio.create_task(job()) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        return [task.result() for task in tasks]
    finally:
        pending = [t for t in tasks if not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
