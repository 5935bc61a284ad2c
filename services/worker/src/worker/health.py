"""This worker's view of its upstream, reported on pixelmesh.provider.health (routing.health).

A job that fails with PROVIDER_AUTH (the upstream refused the gateway's key or account)
makes the worker report its pool unhealthy with that reason: routing then answers the
pool's models with a 503 naming the provider instead of queueing jobs that would all fail
the same way. The worker reports at start (healthy), on every change, and every
`interval` seconds so routing can tell a live worker from a gone one. A refusal lasts
`unhealthy_seconds`: then the worker reports healthy again, so that the next job tries
the upstream once more (a topped-up account, a key fixed upstream); a restart with a new
key reports healthy at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time

from google.protobuf.timestamp_pb2 import Timestamp

from bus import PROVIDER_HEALTH_TOPIC, Producer
from pixelmesh.events.v1 import events_pb2
from svckit.errors import ErrorCode
from svckit.logging import get_logger

log = get_logger(__name__)


class HealthReporter:
    def __init__(
        self, producer: Producer, provider: str, *, interval: float = 30.0, unhealthy_seconds: float = 300.0
    ) -> None:
        self._producer = producer
        self._provider = provider
        self._worker = f"{socket.gethostname()}/{os.getpid()}"
        self._interval = interval
        self._unhealthy_seconds = unhealthy_seconds
        self._refused: tuple[str, str, float] | None = None  # (code, reason, when)
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def healthy(self) -> bool:
        if self._refused is not None and time.monotonic() - self._refused[2] >= self._unhealthy_seconds:
            self._refused = None
        return self._refused is None

    def observe(self, code: ErrorCode | None, message: str = "") -> None:
        """A job's outcome: None for a success, else its error code and message."""
        if code is ErrorCode.PROVIDER_AUTH:
            was = self.healthy
            self._refused = (code.value, message, time.monotonic())
            if was:
                log.error("the upstream refuses this worker; reporting its pool unhealthy", reason=message)
                self._changed.set()
        elif code is None and not self.healthy:
            self._refused = None
            self._changed.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="report provider health")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def report(self) -> events_pb2.ProviderHealth:
        ts = Timestamp()
        ts.GetCurrentTime()
        healthy = self.healthy
        code, reason, _ = self._refused if not healthy and self._refused else ("", "", 0.0)
        return events_pb2.ProviderHealth(
            provider=self._provider,
            worker=self._worker,
            healthy=healthy,
            code=code,
            reason=reason,
            report_time=ts,
            interval_seconds=max(1, round(self._interval)),
        )

    async def _run(self) -> None:
        while True:
            report = self.report()
            try:
                await self._producer.send(
                    PROVIDER_HEALTH_TOPIC, f"{self._provider}/{self._worker}", report, traced=False
                )
            except Exception as exc:  # the bus is away: the next beat tries again
                log.warning("could not report provider health", error=repr(exc))
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), self._interval)
