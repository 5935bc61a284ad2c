"""JobRunner's events: what a fast job, a slow job and a job reporting progress put on the bus."""

from __future__ import annotations

import asyncio

import pytest

from bus import Record
from pixelmesh.common.v1 import generation_pb2 as gen
from pixelmesh.events.v1 import events_pb2
from pixelmesh.routing.v1 import routing_service_pb2
from services.worker.tests.support import Storage
from svckit.errors import ErrorCode
from worker import core
from worker.core import JobRunner
from worker.providers import GeneratedImage, ProviderError, ProviderResult

IMAGE = GeneratedImage(b"\x89PNG fake", 8, 8, gen.OUTPUT_FORMAT_PNG)


class Bus:
    def __init__(self, fail: bool = False) -> None:
        self.states: list[gen.Generation] = []
        self.fail = fail

    async def send(self, topic: str, key: str, message: events_pb2.GenerationEvent) -> None:
        await asyncio.sleep(0.001)
        if self.fail:
            raise ConnectionError("the bus is down")
        self.states.append(message.generation)


class Provider:
    name = "fake"

    def __init__(self, seconds: float, progress_at: float | None = None) -> None:
        self.seconds, self.progress_at = seconds, progress_at

    async def generate(self, generation: gen.Generation, progress) -> ProviderResult:  # noqa: ANN001
        if self.progress_at is not None:
            await asyncio.sleep(self.progress_at)
            await progress(50.0)
        await asyncio.sleep(self.seconds)
        return ProviderResult([IMAGE])

    async def cancel(self, upstream_id: str) -> None:
        pass


def job() -> Record[events_pb2.GenerationJob]:
    g = gen.Generation(id="gen_01TEST", state=gen.GENERATION_STATE_QUEUED, version=1, width=8, height=8, attempt=1)
    return Record(
        "pixelmesh.generation.requests.fake", 0, 0, g.id, events_pb2.GenerationJob(generation=g), maybe_seen=False
    )


def names(bus: Bus) -> list[str]:
    return [gen.GenerationState.Name(s.state).removeprefix("GENERATION_STATE_") for s in bus.states]


async def test_a_job_done_before_the_announcement_goes_from_queued_to_its_end_in_one_event() -> None:
    bus = Bus()
    await JobRunner(Provider(0.0), Storage(), None, None, bus).handle(job())
    assert names(bus) == ["SUCCEEDED"]
    done = bus.states[-1]
    assert done.version > 1 and done.HasField("start_time") and done.HasField("end_time")


async def test_a_slow_job_is_announced_running_then_ends() -> None:
    bus = Bus()
    await JobRunner(Provider(core.RUNNING_ANNOUNCE_SECONDS * 4), Storage(), None, None, bus).handle(job())
    assert names(bus) == ["RUNNING", "SUCCEEDED"]
    assert bus.states[0].version < bus.states[1].version


async def test_progress_before_the_announcement_takes_its_place() -> None:
    bus = Bus()
    await JobRunner(Provider(0.0, progress_at=0.0), Storage(), None, None, bus).handle(job())
    assert names(bus) == ["RUNNING", "SUCCEEDED"]
    assert bus.states[0].progress_percent == 50.0


async def test_a_bus_outage_fails_the_handler_so_the_job_is_redelivered() -> None:
    with pytest.raises(ConnectionError):
        await JobRunner(Provider(core.RUNNING_ANNOUNCE_SECONDS * 4), Storage(), None, None, Bus(fail=True)).handle(
            job()
        )
    with pytest.raises(ConnectionError):
        await JobRunner(Provider(0.0), Storage(), None, None, Bus(fail=True)).handle(job())


class Failing(Provider):
    def __init__(self, retryable: bool) -> None:
        super().__init__(0.0)
        self.retryable = retryable

    async def generate(self, generation: gen.Generation, progress) -> ProviderResult:  # noqa: ANN001
        raise ProviderError(ErrorCode.PROVIDER_UNAVAILABLE, "fake is down", retryable=self.retryable)


class Routing:
    """RoutingService's ReportAttemptFailure: what routing was told; it answers FAILED."""

    def __init__(self) -> None:
        self.reports: list[events_pb2.GenerationJob] = []

    async def ReportAttemptFailure(self, request, timeout=None, wait_for_ready=None):  # noqa: ANN001, ANN201, N802
        self.reports.append(request.job)
        answer = gen.Generation()
        answer.CopyFrom(request.job.generation)
        answer.state = gen.GENERATION_STATE_FAILED
        return routing_service_pb2.ReportAttemptFailureResponse(generation=answer)


@pytest.mark.parametrize("retryable", [True, False])
async def test_a_failed_attempt_is_reported_to_routing_which_decides(retryable: bool) -> None:
    """The worker neither reroutes nor fails the generation itself, whatever its routes."""
    bus, routing = Bus(), Routing()
    record = job()
    record.message.routes.extend(["fake", "other"])
    record.message.tariff.per_image.tokens = 3
    await JobRunner(Failing(retryable), Storage(), None, routing, bus).handle(record)
    assert bus.states == []  # nothing published by the worker
    (handed_back,) = routing.reports
    assert list(handed_back.routes) == ["fake", "other"] and handed_back.tariff.per_image.tokens == 3  # as it came
    report = handed_back.generation
    (attempt,) = report.attempts
    assert (attempt.number, attempt.provider, attempt.error.code, attempt.error.retryable) == (
        1,
        "fake",
        "provider_unavailable",
        retryable,
    )
    assert attempt.HasField("end_time") and report.state == gen.GENERATION_STATE_RUNNING
