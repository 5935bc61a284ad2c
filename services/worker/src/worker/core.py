"""Runs one generation job: RUNNING, the provider call, storage, then a terminal event.

Idempotent by (generation id, attempt): a redelivered job first asks status whether the
generation already ended (then it is skipped); if status has not seen the end yet, the
job runs again and, because versions, object keys and (for deterministic providers) the
bytes are the same, the redo lands as the same result, never a second different one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
from opentelemetry import trace
from prometheus_client import Counter, Gauge, Histogram

from bus import EVENTS_TOPIC, PoisonMessage, Producer, Record, advance, generation_event, is_terminal
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2
from pixelmesh.status.v1 import status_service_pb2, status_service_pb2_grpc
from pixelmesh.storage.v1 import storage_service_pb2 as storage_pb
from pixelmesh.storage.v1 import storage_service_pb2_grpc
from svckit.errors import ErrorCode
from svckit.logging import get_logger
from worker.providers import GeneratedImage, Provider, ProviderError

log = get_logger(__name__)
GENERATIONS = Counter("pixelmesh_worker_generations_total", "Generations finished by this worker", ["provider", "outcome", "code"])
GENERATION_SECONDS = Histogram(
    "pixelmesh_worker_generation_duration_seconds",
    "Time from picking a job to its terminal event",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
IN_FLIGHT = Gauge("pixelmesh_worker_jobs_in_flight", "Jobs being handled now", ["provider"])
CHUNK = 256 * 1024
# Partial images (stream=true) are stored at indexes 1000, 1001, ... beside the final ones.
PARTIAL_INDEX = 1000
STORE_ATTEMPTS = 3


class JobRunner:
    def __init__(
        self,
        provider: Provider,
        storage: storage_service_pb2_grpc.StorageServiceStub,
        status: status_service_pb2_grpc.StatusServiceStub,
        producer: Producer,
    ) -> None:
        self._provider = provider
        self._storage = storage
        self._status = status
        self._producer = producer
        self._name = f"worker-{provider.name}"

    async def handle(self, record: Record[events_pb2.GenerationJob]) -> None:
        job = record.message.generation
        if not job.id or job.state != gen.GENERATION_STATE_QUEUED or not job.width or not job.height:
            raise PoisonMessage("a job must carry a QUEUED generation with an id and a size")
        span = trace.get_current_span()
        span.set_attribute("pixelmesh.generation.id", job.id)
        span.set_attribute("pixelmesh.model", job.model)
        span.set_attribute("pixelmesh.provider", self._provider.name)
        span.set_attribute("pixelmesh.attempt", job.attempt)
        if await self._already_ended(job.id):
            log.info("skipping a job that already ended", generation_id=job.id)
            return
        started = time.monotonic()
        in_flight = IN_FLIGHT.labels(self._provider.name)
        in_flight.inc()
        try:
            outcome, code = await self._run(job)
        finally:
            in_flight.dec()
        GENERATIONS.labels(self._provider.name, outcome, code).inc()
        GENERATION_SECONDS.labels(self._provider.name).observe(time.monotonic() - started)

    async def _run(self, job: gen.Generation) -> tuple[str, str]:
        """RUNNING, progress, then SUCCEEDED or FAILED; returns (outcome, error code)."""
        state = advance(job, gen.GENERATION_STATE_RUNNING)
        await self._emit(state)

        async def progress(percent: float, partial: GeneratedImage | None = None) -> None:
            nonlocal state
            ref = await self._store(job, PARTIAL_INDEX + len(state.partial_images), partial) if partial else None
            state = advance(state)
            state.progress_percent = percent
            if ref is not None:
                state.partial_images.append(ref)
            await self._emit(state)

        try:
            images = await self._provider.generate(state, progress)
            refs = [await self._store(job, i, img) for i, img in enumerate(images)]
        except ProviderError as exc:
            await self._fail(state, exc.code, exc.message, exc.retryable)
            return "failed", exc.code.value
        except _StorageFailed as exc:
            await self._fail(state, ErrorCode.INTERNAL, f"storing the image failed: {exc}", True)
            return "failed", ErrorCode.INTERNAL.value
        done = advance(state, gen.GENERATION_STATE_SUCCEEDED)
        done.progress_percent = 100.0
        del done.images[:]
        done.images.extend(refs)
        await self._emit(done)
        log.info("generation succeeded", generation_id=job.id, images=len(refs))
        return "succeeded", ""

    async def _already_ended(self, generation_id: str) -> bool:
        try:
            resp = await self._status.GetGeneration(
                status_service_pb2.GetGenerationRequest(generation_id=generation_id), timeout=2
            )
        except grpc.aio.AioRpcError:
            return False  # unknown or status unreachable: do the job
        return is_terminal(resp.generation)

    async def _fail(self, state: gen.Generation, code: ErrorCode, message: str, retryable: bool) -> None:
        failed = advance(state, gen.GENERATION_STATE_FAILED)
        failed.error.CopyFrom(
            gen.GenerationError(code=code.value, message=message, retryable=retryable, provider=self._provider.name)
        )
        await self._emit(failed)
        log.warning("generation failed", generation_id=state.id, code=code.value, error=message)

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
