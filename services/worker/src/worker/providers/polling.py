"""Submit-then-poll upstreams (BFL, Midjourney proxies, Replicate, fal): one base, hooks per API.

`PollingProvider.run` submits the generation's upstream jobs (n of them for upstreams
that make one image per job), names them for a cancel, polls each with the job clock's
intervals until it ends, fetches what it made, and hands the outputs to `collect`. The
adapter says only how its API does each step: `requests`, `submit`, `poll`, `fetch`,
`collect` (and `cancel`). n jobs' progress is reported as one (`Fanout`); the first
failure cancels the others.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Any

from pixelmesh.common.v1 import generation_pb2 as gen
from worker.providers.adapter import JobClock, Provider, all_or_first_error
from worker.providers.base import Progress, ProviderResult

# HTTP connections per polling adapter. Polls are short requests: a few connections carry
# thousands of jobs, and httpcore's pool does work quadratic in its size on every request.
POLL_CONNECTIONS = 8
_PERCENT = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*%")


@dataclass(frozen=True)
class Poll:
    """One look at an upstream job: ended yet, and how far along (0-100; None: not said)."""

    done: bool = False
    percent: float | None = None


@dataclass
class Task:
    """One upstream job: its id, what the adapter keeps about it (URLs, its last answer), and
    the last look at it (a submit may answer with a job already done)."""

    id: str
    state: dict[str, Any] = field(default_factory=dict)
    last: Poll = Poll()


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


class PollingProvider(Provider):
    max_connections = POLL_CONNECTIONS

    async def run(self, generation: gen.Generation, progress: Progress, clock: JobClock) -> ProviderResult:
        requests = await self.requests(generation)
        fan = Fanout(progress, len(requests))
        outputs = await all_or_first_error([self._job(r, i, fan, clock) for i, r in enumerate(requests)])
        return await self.collect(generation, outputs)

    async def _job(self, request: Any, index: int, fan: Fanout, clock: JobClock) -> Any:
        task = await self.submit(request)
        await fan.upstream(index, task.id)
        poll = task.last
        while not poll.done:
            if poll.percent is not None:
                await fan.report(index, min(poll.percent, 99.0))
            await clock.wait()
            poll = task.last = await self.poll(task)
        output = await self.fetch(task)
        await fan.report(index, 100.0)
        return output

    @abstractmethod
    async def requests(self, generation: gen.Generation) -> list[Any]:
        """The upstream jobs of one generation (what `submit` sends), checked before any call."""

    @abstractmethod
    async def submit(self, request: Any) -> Task:
        """Start one upstream job."""

    @abstractmethod
    async def poll(self, task: Task) -> Poll:
        """Look at the job once; raise its failure, classified, when it failed."""

    @abstractmethod
    async def fetch(self, task: Task) -> Any:
        """What the ended job made (image bytes, result URLs, ...), fetched at once: result URLs expire."""

    @abstractmethod
    async def collect(self, generation: gen.Generation, outputs: list[Any]) -> ProviderResult:
        """Every job's output, in order, as the generation's result."""
