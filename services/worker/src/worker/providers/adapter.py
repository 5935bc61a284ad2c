"""The interface every provider adapter implements, and the context the worker hands it.

The worker builds each adapter once (`Provider.from_env`) with one `Context`: the
adapter's settings, the HTTP client to its upstream, the input reader (storage client
inside) and the status client. Per job it calls `generate`, which gives the adapter's
`run` one `JobClock`: the job's deadline (WORKER_JOB_TIMEOUT_SECONDS, the one timeout of
every adapter) and the polling intervals. An adapter declares what differs: `name`,
`settings_type`, `headers` (its auth), `classify` (its refusals), `limits` (timeout and
connections, where they are not the shared ones), `run`, `cancel`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

import httpx

from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.status.v1 import status_service_pb2_grpc
from pixelmesh.storage.v1 import storage_service_pb2_grpc
from svckit.errors import ErrorCode
from svckit.settings import load_settings
from worker.providers.base import Progress, ProviderError, ProviderResult
from worker.providers.input_images import InputReader
from worker.providers.settings import UpstreamSettings
from worker.providers.upstream import Upstream

T = TypeVar("T")
GROWTH = 1.5
JITTER = 0.2  # +-20 %, so jobs submitted together do not poll in lockstep
ETA_FRACTION = 10  # the first poll after a tenth of the expected run (within the bounds)


@dataclass(frozen=True)
class Context:
    """What the worker hands an adapter; tests build one around fakes (`Provider.build`)."""

    settings: Any  # the adapter's own `settings_type`
    http: Upstream
    inputs: InputReader
    status: status_service_pb2_grpc.StatusServiceAsyncStub | None = None


class JobClock:
    """One job's deadline and its polling intervals.

    The deadline bounds the whole job (`bound`), abandoning it as a retryable TIMEOUT;
    `wait` sleeps until the next poll, growing, jittered intervals bounded by
    WORKER_POLL_MAX_INTERVAL_SECONDS. `eta_seconds` (the catalog's estimate) sets a later
    first poll for long jobs: a Midjourney run of a minute is not polled every second at
    first. A job waiting for its next poll is one sleeping coroutine: a worker holds
    thousands of them without a thread each."""

    __slots__ = ("_eta", "_interval", "_provider", "_settings", "deadline")

    def __init__(self, provider: str, settings: UpstreamSettings, *, eta_seconds: float = 0) -> None:
        self._provider = provider
        self._settings = settings
        self._eta = eta_seconds
        self._interval = 0.0  # set at the first wait: most jobs never poll
        self.deadline = asyncio.get_running_loop().time() + settings.job_timeout_seconds

    async def bound(self, work: Awaitable[T]) -> T:
        """`work`, abandoned (retryably: another route may be quicker) at the deadline."""
        try:
            async with asyncio.timeout_at(self.deadline):
                return await work
        except TimeoutError:
            raise ProviderError(
                ErrorCode.TIMEOUT,
                f"{self._provider} did not finish the job within {self._settings.job_timeout_seconds:.0f} s",
                retryable=True,
            ) from None

    async def wait(self) -> None:
        """Sleep until the next poll."""
        most = self._settings.poll_max_interval_seconds
        if not self._interval:
            self._interval = max(self._settings.poll_interval_seconds, min(most, self._eta / ETA_FRACTION))
        delay = self._interval * random.uniform(1 - JITTER, 1 + JITTER)
        self._interval = min(most, self._interval * GROWTH)
        await asyncio.sleep(delay)


async def all_or_first_error(coros: list[Awaitable[T]]) -> list[T]:
    """Run concurrently, results in order; the first failure cancels the rest and is raised."""
    if len(coros) == 1:
        return [await coros[0]]
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class Provider(ABC):
    """One upstream API. `generate` is what the worker calls; an adapter implements `run`."""

    name: ClassVar[str]
    settings_type: ClassVar[type[UpstreamSettings]] = UpstreamSettings
    # HTTP connections to the upstream (polling adapters need few: polls are short).
    max_connections: ClassVar[int] = 200

    def __init__(self, context: Context) -> None:
        self.context = context
        self.settings = context.settings
        self.http = context.http
        self.inputs = context.inputs

    @classmethod
    def from_env(
        cls,
        storage: storage_service_pb2_grpc.StorageServiceAsyncStub | None = None,
        status: status_service_pb2_grpc.StatusServiceAsyncStub | None = None,
    ) -> Self:
        """The adapter from its settings (environment); exits naming a missing key."""
        return cls.build(load_settings(cls.settings_type), storage=storage, status=status)

    @classmethod
    def build(
        cls,
        settings: UpstreamSettings,
        *,
        storage: storage_service_pb2_grpc.StorageServiceAsyncStub | None = None,
        status: status_service_pb2_grpc.StatusServiceAsyncStub | None = None,
    ) -> Self:
        http = cls.connect(settings)
        inputs = InputReader(
            http, settings.download_max_bytes, storage, allow_private_urls=settings.input_urls_allow_private
        )
        return cls(Context(settings, http, inputs, status))

    @classmethod
    def connect(cls, settings: Any) -> Upstream:
        """The HTTP client to the upstream: its base URL, `headers` (or `auth`) on every call,
        the `secret` scrubbed from every error, `classify` before the generic mapping."""
        timeout, connections = cls.limits(settings)
        return Upstream(
            cls.name,
            settings.base_url,
            headers=cls.headers(settings),
            auth=cls.auth(settings),
            secret=cls.secret(settings),
            retry=settings.retry_policy(),
            timeout=timeout,
            classify=cls.classify,
            max_connections=connections,
        )

    @classmethod
    def limits(cls, settings: Any) -> tuple[float, int]:
        """(one HTTP request's timeout, connections to the upstream)."""
        return settings.request_timeout_seconds, cls.max_connections

    @staticmethod
    def headers(settings: Any) -> dict[str, str]:
        """The upstream's auth headers."""
        return {}

    @staticmethod
    def auth(settings: Any) -> httpx.Auth | None:
        """An auth flow, where a fixed header will not do (Kling's signed, renewed token)."""
        return None

    @staticmethod
    def secret(settings: Any) -> str:
        """The credential never to appear in an error."""
        return settings.api_key.get_secret_value()

    @staticmethod
    def classify(response: httpx.Response) -> ProviderError | None:
        """The upstream's own reading of a failed response (refusals, ...); None: the generic one."""
        return None

    async def generate(self, generation: gen.Generation, progress: Progress) -> ProviderResult:
        """Produce the generation's images (all `params.n` of them, in order) within the job's
        timeout; a job abandoned at its timeout is cancelled upstream (best effort)."""
        clock = JobClock(self.name, self.settings, eta_seconds=generation.eta_seconds)
        try:
            return await clock.bound(self.run(generation, progress, clock))
        except ProviderError as exc:
            if exc.code is ErrorCode.TIMEOUT and progress.upstream_id:
                with contextlib.suppress(ProviderError):
                    await self.cancel(progress.upstream_id)  # stop paying for it upstream
            raise

    @abstractmethod
    async def run(self, generation: gen.Generation, progress: Progress, clock: JobClock) -> ProviderResult:
        """The adapter's work for one generation."""

    async def cancel(self, upstream_id: str) -> None:
        """Ask the upstream to stop job `upstream_id` (where the API has a cancel endpoint).
        Called after the task running `generate` was cancelled, or at its timeout; best effort."""

    async def close(self) -> None:
        """Release the upstream's connections on shutdown."""
        await self.http.close()
