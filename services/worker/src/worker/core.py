"""Runs one generation job: RUNNING (announced once it ran 50 ms), the provider call, storage, the end.

Idempotent by (generation id, attempt): a job that may be a redelivery (one that was in
its topic before this worker took the partition over, see bus.Record.maybe_seen) first
asks status whether the generation already ended (then it is skipped); if status has not
seen the end yet, the job runs again and, because versions, object keys and (for
deterministic providers) the bytes are the same, the redo lands as the same result, never
a second different one. A job dispatched while this worker held its partition cannot
have been run before, so it goes straight to the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import grpc
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram

from bus import EVENTS_TOPIC, PoisonMessage, Producer, Record, generation_event
from lifecycle import advance, attempt_failed, current_attempt, is_terminal
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2
from pixelmesh.routing.v1 import routing_service_pb2, routing_service_pb2_grpc
from pixelmesh.status.v1 import status_service_pb2, status_service_pb2_grpc
from pixelmesh.storage.v1 import storage_service_pb2 as storage_pb
from pixelmesh.storage.v1 import storage_service_pb2_grpc
from svckit.accounts import account_metadata
from svckit.errors import ErrorCode
from svckit.logging import get_logger
from svckit.tariffs import final_cost
from worker.health import HealthReporter
from worker.providers import GeneratedImage, Progress, Provider, ProviderError, ProviderResult

log = get_logger(__name__)
GENERATIONS = Counter(
    "pixelmesh_worker_generations_total", "Generations finished by this worker", ["provider", "outcome", "code"]
)
GENERATION_SECONDS = Histogram(
    "pixelmesh_worker_generation_duration_seconds",
    "Time from picking a job to its terminal event",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
IN_FLIGHT = Gauge("pixelmesh_worker_jobs_in_flight", "Jobs being handled now", ["provider"])
CHUNK = 256 * 1024
STORE_ATTEMPTS = 3
# Partial images (stream=true) are stored at indices from here, apart from the final ones.
PARTIAL_INDEX_BASE = 1000
# How many cancelled generation ids a worker remembers (to skip their queued jobs).
CANCELLED_MEMORY = 10_000


class JobRunner:
    def __init__(
        self,
        provider: Provider,
        storage: storage_service_pb2_grpc.StorageServiceAsyncStub,
        status: status_service_pb2_grpc.StatusServiceAsyncStub,
        routing: routing_service_pb2_grpc.RoutingServiceAsyncStub,
        producer: Producer,
        health: HealthReporter | None = None,
    ) -> None:
        self._provider = provider
        self._health = health
        self._storage = storage
        self._status = status
        self._routing = routing
        self._producer = producer
        self._name = f"worker-{provider.name}"
        self._running: dict[str, asyncio.Task[ProviderResult]] = {}
        self._cancelled: dict[str, None] = {}  # insertion-ordered set

    async def handle(self, record: Record[events_pb2.GenerationJob]) -> None:
        job = record.message.generation
        if not job.id or job.state != gen.GENERATION_STATE_QUEUED or not job.width or not job.height:
            raise PoisonMessage("a job must carry a QUEUED generation with an id and a size")
        span = trace.get_current_span()
        span.set_attribute("pixelmesh.generation.id", job.id)
        span.set_attribute("pixelmesh.model", job.model)
        span.set_attribute("pixelmesh.provider", self._provider.name)
        span.set_attribute("pixelmesh.attempt", job.attempt)
        if job.id in self._cancelled or (record.maybe_seen and await self._already_ended(job)):
            log.info("skipping a job that already ended", generation_id=job.id)
            return
        started = time.monotonic()
        in_flight = IN_FLIGHT.labels(self._provider.name)
        in_flight.inc()
        try:
            outcome, code = await self._run(record.message)
        finally:
            in_flight.dec()
        GENERATIONS.labels(self._provider.name, outcome, code).inc()
        GENERATION_SECONDS.labels(self._provider.name).observe(time.monotonic() - started)

    def cancel(self, generation_id: str) -> bool:
        """Stop the job of a generation cancelled by its owner (control topic). True when it ran here."""
        self._cancelled[generation_id] = None
        if len(self._cancelled) > CANCELLED_MEMORY:
            del self._cancelled[next(iter(self._cancelled))]  # forget the oldest
        task = self._running.get(generation_id)
        if task is None:
            return False
        task.cancel()
        return True

    async def _run(self, dispatched: events_pb2.GenerationJob) -> tuple[str, str]:
        """RUNNING, progress, then SUCCEEDED, or the failed attempt reported to routing."""
        job = dispatched.generation
        state = advance(job, gen.GENERATION_STATE_RUNNING)
        current_attempt(state, self._provider.name)
        running = _Announcement(self._emit(state))
        partials: list[gen.ImageRef] = []

        async def report(percent: float, partial: GeneratedImage | None) -> None:
            nonlocal state
            await running.settle()
            if partial is None and percent >= 100.0:
                return  # the terminal state follows at once and says as much
            state = advance(state)
            state.progress_percent = percent
            if partial is not None:
                ref = await self._store(job, PARTIAL_INDEX_BASE + len(partials), partial)
                ref.index = len(partials)
                partials.append(ref)
                state.partial_images.append(ref)
            await self._emit(state)

        def upstream(upstream_id: str) -> None:  # recorded on the attempt with the next event
            current_attempt(state, self._provider.name).upstream_id = upstream_id

        progress = Progress(report, upstream)
        task = asyncio.create_task(self._provider.generate(state, progress))
        self._running[job.id] = task
        try:
            try:
                result = await task
            finally:
                await running.settle()
            refs = [await self._store(job, i, img) for i, img in enumerate(result.images)]
        except asyncio.CancelledError:
            if job.id not in self._cancelled:
                raise  # shutting down: the job goes back to the topic, another worker does it
            await self._cancel_upstream(progress.upstream_id)
            log.info("generation cancelled while running", generation_id=job.id)
            return "cancelled", ErrorCode.CANCELLED.value
        except ProviderError as exc:
            if self._health is not None:
                self._health.observe(exc.code, exc.message)
            await self._fail(dispatched, state, exc.code, exc.message, exc.retryable)
            return "failed", exc.code.value
        except _StorageFailed as exc:
            await self._fail(dispatched, state, ErrorCode.INTERNAL, f"storing the image failed: {exc}", True)
            return "failed", ErrorCode.INTERNAL.value
        finally:
            self._running.pop(job.id, None)
        done = advance(state, gen.GENERATION_STATE_SUCCEEDED)
        done.progress_percent = 100.0
        del done.images[:]
        done.images.extend(refs)
        if result.usage is not None:
            done.usage.CopyFrom(result.usage)
        done.buttons.extend(result.buttons)
        done.descriptions.extend(result.descriptions)
        current_attempt(done, self._provider.name).end_time.CopyFrom(done.end_time)
        if dispatched.HasField("tariff"):  # the cost of what came back, as pricing charges it
            done.cost.CopyFrom(final_cost(dispatched.tariff, len(refs), done.usage))
        await self._emit(done)
        if self._health is not None:
            self._health.observe(None)
        log.info("generation succeeded", generation_id=job.id, images=len(refs))
        return "succeeded", ""

    async def _cancel_upstream(self, upstream_id: str) -> None:
        if not upstream_id:
            return
        try:
            await asyncio.wait_for(self._provider.cancel(upstream_id), timeout=10)
        except Exception as exc:  # best effort: the generation is cancelled either way
            log.warning("upstream cancel failed", provider=self._provider.name, error=repr(exc))

    async def _already_ended(self, job: gen.Generation) -> bool:
        try:
            resp = await self._status.GetGeneration(
                status_service_pb2.GetGenerationRequest(generation_id=job.id),
                metadata=account_metadata(job.account_id),
                timeout=2,
            )
        except grpc.aio.AioRpcError:
            return False  # unknown or status unreachable: do the job
        return is_terminal(resp.generation)

    async def _fail(
        self,
        dispatched: events_pb2.GenerationJob,
        state: gen.Generation,
        code: ErrorCode,
        message: str,
        retryable: bool,
    ) -> None:
        """Report the failed attempt to routing (the job with its tariff and routes, as it came),
        which decides what happens next (the next route, or FAILED) and publishes it before it
        answers. Routing briefly away is waited for; a report it never takes fails the handler,
        so the job is tried again."""
        error = gen.GenerationError(code=code.value, message=message, retryable=retryable, provider=self._provider.name)
        report = events_pb2.GenerationJob(
            generation=attempt_failed(state, self._provider.name, error),
            tariff=dispatched.tariff,
            routes=dispatched.routes,
        )
        answer = await self._routing.ReportAttemptFailure(
            routing_service_pb2.ReportAttemptFailureRequest(job=report), timeout=30, wait_for_ready=True
        )
        next_state = gen.GenerationState.Name(answer.generation.state).removeprefix("GENERATION_STATE_").lower()
        log.warning("attempt failed", generation_id=state.id, code=code.value, error=message, then=next_state)

    async def _emit(self, generation: gen.Generation) -> None:
        await self._producer.send(EVENTS_TOPIC, generation.id, generation_event(generation, self._name))

    async def _store(self, job: gen.Generation, index: int, image: GeneratedImage) -> gen.ImageRef:
        header = storage_pb.PutImageHeader(
            generation_id=job.id,
            index=index,
            retention_class=job.retention_class,
            output_format=image.output_format,
            width=image.width,
            height=image.height,
        )

        async def parts() -> AsyncIterator[storage_pb.PutImageRequest]:
            yield storage_pb.PutImageRequest(header=header)
            for start in range(0, len(image.data), CHUNK):
                yield storage_pb.PutImageRequest(chunk=image.data[start : start + CHUNK])

        delay = 0.5
        for attempt in range(1, STORE_ATTEMPTS + 1):
            try:
                resp = await self._storage.PutImage(parts(), timeout=60)
                break
            except grpc.aio.AioRpcError as exc:
                if attempt == STORE_ATTEMPTS or exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise _StorageFailed(exc.details() or exc.code().name) from exc
                await asyncio.sleep(delay)
                delay *= 2
        ref = resp.image
        ref.revised_prompt = image.revised_prompt
        return ref


class _StorageFailed(Exception):
    pass


# A job still running after this long is announced RUNNING; one that ends sooner goes from
# QUEUED to its end in one event (a state nobody could have seen costs an event on the bus
# and a read by every consumer group; start_time is kept either way).
RUNNING_ANNOUNCE_SECONDS = 0.05


class _Announcement:
    """The RUNNING event of a job, sent once the job has run RUNNING_ANNOUNCE_SECONDS.

    `settle()` comes before any later event of the job: an announcement not yet due is
    dropped (that event supersedes it); one already sending is awaited, so its failure
    (the bus is down) fails the job as any other event's would."""

    def __init__(self, send: Coroutine[Any, Any, None]) -> None:
        self._send = send
        self._sending = False
        self._task = asyncio.ensure_future(self._announce())

    async def _announce(self) -> None:
        await asyncio.sleep(RUNNING_ANNOUNCE_SECONDS)
        self._sending = True
        await self._send

    async def settle(self) -> None:
        if not self._sending:
            self._task.cancel()
            self._send.close()  # never started: nothing was sent
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            return
        await asyncio.shield(self._task)
